"""The training stream is the same for any number of processes; eval shards are disjoint."""

from itertools import islice

from segaccel.data.samplers import InfiniteSampler, ShardedEvalSampler


def take(sampler, n):
    return list(islice(iter(sampler), n))


def test_stream_is_a_permutation_per_epoch():
    s = take(InfiniteSampler(10, batch_size=5, seed=3), 20)
    assert [e for e, _ in s] == [0] * 10 + [1] * 10
    assert sorted(i for _, i in s[:10]) == list(range(10)) and sorted(i for _, i in s[10:]) == list(range(10))
    assert [i for _, i in s[:10]] != [i for _, i in s[10:]]  # reshuffled each epoch


def test_two_processes_together_see_the_one_process_global_batches():
    one = take(InfiniteSampler(7, batch_size=4, seed=1), 4 * 5)
    r0 = take(InfiniteSampler(7, batch_size=2, seed=1, rank=0, world_size=2), 2 * 5)
    r1 = take(InfiniteSampler(7, batch_size=2, seed=1, rank=1, world_size=2), 2 * 5)
    for step in range(5):
        assert one[4 * step : 4 * step + 4] == r0[2 * step : 2 * step + 2] + r1[2 * step : 2 * step + 2]


def test_start_batch_resumes_the_stream():
    full = take(InfiniteSampler(9, batch_size=3, seed=0), 30)
    resumed = take(InfiniteSampler(9, batch_size=3, seed=0, start_batch=4), 18)
    assert resumed == full[12:30]


def test_eval_shards_are_disjoint_and_unpadded():
    shards = [list(ShardedEvalSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]
