"""MMSegmentation-style config files for the tests: a `_base_` tree laid out and written as
MMSegmentation 1.x writes its own (models, datasets, runtime, schedules), and one top config per
family narrowed the way the fixtures in tests/fixtures/mmseg were (same constructor arguments).

`write_mmseg_configs(root)` writes them and returns `{family: top config path}`.
"""

from __future__ import annotations

from pathlib import Path

_PREPROCESSOR = """data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
"""

_RESNET_D8 = """norm_cfg = dict(type='SyncBN', requires_grad=True)
{preprocessor}model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(
        type='ResNetV1c',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        {head}
        in_channels=2048,
        in_index=3,
        channels=512,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=1024,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    # model training and testing settings
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
"""

_HEADS = {
    "pspnet_r50-d8": "type='PSPHead', pool_scales=(1, 2, 3, 6),",
    "fcn_r50-d8": "type='FCNHead', num_convs=2, concat_input=True,",
    "deeplabv3_r50-d8": "type='ASPPHead', dilations=(1, 12, 24, 36),",
    "deeplabv3plus_r50-d8": "type='DepthwiseSeparableASPPHead', dilations=(1, 12, 24, 36), "
    "c1_in_channels=256, c1_channels=48,",
}

_UPERNET_HEADS = """    decode_head=dict(
        type='UPerHead',
        in_channels={channels},
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels={aux},
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    # model training and testing settings
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
"""

MODELS = {
    **{name: _RESNET_D8.format(preprocessor=_PREPROCESSOR, head=head) for name, head in _HEADS.items()},
    "upernet_swin": """# model settings
norm_cfg = dict(type='SyncBN', requires_grad=True)
backbone_norm_cfg = dict(type='LN', requires_grad=True)
"""
    + _PREPROCESSOR
    + """model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='SwinTransformer',
        pretrain_img_size=224,
        embed_dims=96,
        patch_size=4,
        window_size=7,
        mlp_ratio=4,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        qk_scale=None,
        patch_norm=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.3,
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=backbone_norm_cfg),
"""
    + _UPERNET_HEADS.format(channels="[96, 192, 384, 768]", aux=384),
    "upernet_convnext": """norm_cfg = dict(type='SyncBN', requires_grad=True)
custom_imports = dict(imports='mmpretrain.models', allow_failed_imports=False)
checkpoint_file = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/' + \\
    'convnext-base_3rdparty_32xb128-noema_in1k_20220301-2a0ee547.pth'
"""
    + _PREPROCESSOR
    + """model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='mmpretrain.ConvNeXt',
        arch='base',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        gap_before_final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
"""
    + _UPERNET_HEADS.format(channels="[128, 256, 512, 1024]", aux=384),
    "segformer_mit-b0": """# model settings
norm_cfg = dict(type='SyncBN', requires_grad=True)
"""
    + _PREPROCESSOR
    + """model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='MixVisionTransformer',
        in_channels=3,
        embed_dims=32,
        num_stages=4,
        num_layers=[2, 2, 2, 2],
        num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1),
    decode_head=dict(
        type='SegformerHead',
        in_channels=[32, 64, 160, 256],
        in_index=[0, 1, 2, 3],
        channels=256,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    # model training and testing settings
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
""",
}

_DATASET = """# dataset settings
dataset_type = '{type}'
data_root = '{root}'
crop_size = {crop}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'{reduce}),
    dict(
        type='RandomResize',
        scale={scale},
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale={scale}, keep_ratio=True),
    # add loading annotation after ``Resize`` because ground truth
    # does not need to do resize data transform
    dict(type='LoadAnnotations'{reduce}),
    dict(type='PackSegInputs')
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ], [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]
        ])
]
train_dataloader = dict(
    batch_size={batch},
    num_workers={batch},
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='{train_img}', seg_map_path='{train_seg}'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='{val_img}', seg_map_path='{val_seg}'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
"""

DATASETS = {
    "cityscapes": _DATASET.format(
        type="CityscapesDataset", root="data/cityscapes/", crop="(512, 1024)", reduce="",
        scale="(2048, 1024)",
        batch=2, train_img="leftImg8bit/train", train_seg="gtFine/train", val_img="leftImg8bit/val",
        val_seg="gtFine/val",
    ),
    "ade20k": _DATASET.format(
        type="ADE20KDataset", root="data/ade/ADEChallengeData2016", crop="(512, 512)",
        reduce=", reduce_zero_label=True", scale="(2048, 512)", batch=4, train_img="images/training",
        train_seg="annotations/training", val_img="images/validation", val_seg="annotations/validation",
    ),
}

RUNTIME = """default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

tta_model = dict(type='SegTTAModel')
"""

SCHEDULE = """# optimizer
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
# learning policy
iters = {iters}
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=iters,
        by_epoch=False)
]
# training schedule
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=iters, val_interval=iters // 10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters // 10),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
"""


def _bases(model: str, dataset: str, schedule: str) -> str:
    return (
        f"_base_ = [\n    '../_base_/models/{model}.py', '../_base_/datasets/{dataset}.py',\n"
        f"    '../_base_/default_runtime.py', '../_base_/schedules/{schedule}.py'\n]\n"
    )


_ADAMW = """optim_wrapper = dict(
    _delete_=True,
    type='{wrapper}',
    optimizer=dict(
        type='AdamW', lr={lr}, betas=(0.9, 0.999), weight_decay={decay}),
    {paramwise})
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False,
    )
]
"""

TOPS = {
    "pspnet_r50-d8": _bases("pspnet_r50-d8", "cityscapes", "schedule_80k")
    + """crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
base = 4  # base_channels of the fixtures: every width below follows from it
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(base_channels=base, stem_channels=base),
    decode_head=dict(in_channels=base * 8 * 4, channels=16),
    auxiliary_head=dict(in_channels=base * 4 * 4, channels=8))
""",
    "fcn_r50-d8": _bases("fcn_r50-d8", "cityscapes", "schedule_80k")
    + """crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
widths = dict(backbone=4, head=16, aux=8)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(base_channels=widths['backbone'], stem_channels=widths['backbone']),
    decode_head=dict(in_channels=widths['backbone'] * 32, channels=widths['head']),
    auxiliary_head=dict(in_channels=widths['backbone'] * 16, channels=widths['aux']))
train_pipeline = {{_base_.train_pipeline}}
train_dataloader = dict(batch_size=2, num_workers=2, dataset=dict(pipeline=train_pipeline))
""",
    "deeplabv3_r50-d8": _bases("deeplabv3_r50-d8", "cityscapes", "schedule_80k")
    + """crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(base_channels=4, stem_channels=4),
    decode_head=dict(in_channels=128, channels=16),
    auxiliary_head=dict(in_channels=64, channels=8))
""",
    "deeplabv3plus_r50-d8": _bases("deeplabv3plus_r50-d8", "cityscapes", "schedule_80k")
    + """crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
c = 4
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(base_channels=c, stem_channels=c),
    decode_head=dict(in_channels=c * 32, channels=16, c1_in_channels=c * 4, c1_channels=c * 2),
    auxiliary_head=dict(in_channels=c * 16, channels=8))
""",
    "upernet_swin-t": _bases("upernet_swin", "ade20k", "schedule_160k")
    + """crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
checkpoint_file = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/' \\
    'swin_tiny_patch4_window7_224_20220317-1cdeb081.pth'
embed_dims = 8
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        embed_dims=embed_dims,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 4, 8],
        window_size=7,
        use_abs_pos_embed=False,
        drop_path_rate=0.3,
        patch_norm=True),
    decode_head=dict(in_channels=[embed_dims * 2**i for i in range(4)], channels=16, num_classes=150),
    auxiliary_head=dict(in_channels=embed_dims * 4, channels=8, num_classes=150))

"""
    + _ADAMW.format(
        wrapper="OptimWrapper", lr=0.00006, decay=0.01,
        paramwise="paramwise_cfg=dict(custom_keys={'absolute_pos_embed': dict(decay_mult=0.), "
        "'relative_position_bias_table': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)})",
    )
    + """
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
""",
    "upernet_convnext-t": _bases("upernet_convnext", "ade20k", "schedule_160k")
    + """crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
checkpoint_file = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/' + \\
    'convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='mmpretrain.ConvNeXt',
        arch=dict(_delete_=True, depths=[1, 1, 2, 1], channels=[8, 16, 32, 64]),
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        gap_before_final_norm=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=checkpoint_file,
            prefix='backbone.')),
    decode_head=dict(in_channels=[8, 16, 32, 64], channels=16, num_classes=150),
    auxiliary_head=dict(in_channels=32, channels=8, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)
"""
    + _ADAMW.format(
        wrapper="AmpOptimWrapper", lr=0.0001, decay=0.05,
        paramwise="paramwise_cfg={'decay_rate': 0.9, 'decay_type': 'stage_wise', 'num_layers': 6},\n"
        "    constructor='LearningRateDecayOptimizerConstructor',\n    loss_scale='dynamic'",
    )
    + """
# By default, models are trained on 8 GPUs with 2 images per GPU
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
""",
    "segformer_mit-b0": _bases("segformer_mit-b0", "ade20k", "schedule_160k")
    + """crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/' \\
    'mit_b0_20220624-7e0fe6dd.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
        embed_dims=16, num_layers=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
    decode_head=dict(num_classes=150, in_channels=[16, 16, 32, 32], channels=32))

"""
    + _ADAMW.format(
        wrapper="OptimWrapper", lr=0.00006, decay=0.01,
        paramwise="paramwise_cfg=dict(custom_keys={'pos_block': dict(decay_mult=0.), "
        "'norm': dict(decay_mult=0.), 'head': dict(lr_mult=10.)})",
    )
    + """train_dataloader = dict(batch_size=2, num_workers=2)
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = val_dataloader
""",
}


def write_mmseg_configs(root: Path) -> dict[str, Path]:
    """Write the `_base_` tree and the top configs under `root`; `{family: top config}`."""
    files = {f"_base_/models/{name}.py": text for name, text in MODELS.items()}
    files.update({f"_base_/datasets/{name}.py": text for name, text in DATASETS.items()})
    files["_base_/default_runtime.py"] = RUNTIME
    files["_base_/schedules/schedule_80k.py"] = SCHEDULE.format(iters=80000)
    files["_base_/schedules/schedule_160k.py"] = SCHEDULE.format(iters=160000)
    tops = {}
    for family, text in TOPS.items():
        files[f"{family}/{family}_reduced.py"] = text
        tops[family] = root / family / f"{family}_reduced.py"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tops
