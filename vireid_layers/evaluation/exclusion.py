"""Gallery-removal rules: which gallery items a query must not see, one function per rule.

A rule is ``rule(query_ids, query_cams, gallery_ids, gallery_cams) -> (Q, G)`` bool mask of the gallery items
each query drops; :func:`~vireid_layers.evaluation.retrieval_metrics` applies it and every protocol names
its own (:attr:`~vireid_layers.evaluation.EvaluationProtocol.exclude`). Every rule of the library lives here.

=============================================  ============================================================
rule                                           removes, for a query of identity :math:`y` and camera :math:`c`
=============================================  ============================================================
:func:`exclude_sysu_indoor_camera`             if :math:`c = 3`: every camera-2 item, of any identity (SYSU)
:func:`exclude_sysu_indoor_camera_reversed`    if :math:`c = 2`: every camera-3 item (SYSU, visible queries)
:func:`exclude_same_identity_and_camera`       items of identity :math:`y` from camera :math:`c` (LLCM)
:func:`exclude_same_camera`                    every item from camera :math:`c` (MPANet's SYSU rule)
=============================================  ============================================================
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..data.datasets.sysu import SYSU_SAME_ROOM_CAMERAS

__all__ = [
    "ExclusionRule",
    "exclude_same_camera",
    "exclude_same_identity_and_camera",
    "exclude_sysu_indoor_camera",
    "exclude_sysu_indoor_camera_reversed",
]

ExclusionRule = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``rule(query_ids, query_cams, gallery_ids, gallery_cams) -> (Q, G) bool`` mask of gallery items to drop."""

_SYSU_ROOM_RGB, _SYSU_ROOM_IR = SYSU_SAME_ROOM_CAMERAS  # cameras 2 (RGB) and 3 (infrared)


def exclude_same_identity_and_camera(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """Drop gallery items of the query's identity seen by the query's camera (Market-1501, LLCM rule).

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import exclude_same_identity_and_camera
        >>> ids, cams = torch.tensor([1, 1, 2]), torch.tensor([4, 5, 4])
        >>> exclude_same_identity_and_camera(ids[:1], cams[:1], ids, cams)
        tensor([[ True, False, False]])
    """
    return (g_ids.unsqueeze(0) == q_ids.unsqueeze(1)) & (g_cams.unsqueeze(0) == q_cams.unsqueeze(1))


def exclude_sysu_indoor_camera(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """SYSU-MM01 rule: a camera-3 query never sees camera-2 gallery items, of any identity (same room).

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import exclude_sysu_indoor_camera
        >>> g_cams = torch.tensor([1, 2, 4])
        >>> exclude_sysu_indoor_camera(torch.tensor([0, 0]), torch.tensor([3, 6]), torch.tensor([0, 1, 2]), g_cams)
        tensor([[False,  True, False],
                [False, False, False]])
    """
    return (q_cams.unsqueeze(1) == _SYSU_ROOM_IR) & (g_cams.unsqueeze(0) == _SYSU_ROOM_RGB)


def exclude_sysu_indoor_camera_reversed(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """SYSU-MM01 rule for visible queries (the non-standard visible→infrared direction): camera 2 never sees 3.

    The mirror image of :func:`exclude_sysu_indoor_camera`: cameras 2 (RGB) and 3 (IR) film the same indoor
    room, so the pair is removed whichever side queries.

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import exclude_sysu_indoor_camera_reversed
        >>> g_cams = torch.tensor([3, 6])
        >>> exclude_sysu_indoor_camera_reversed(torch.tensor([0]), torch.tensor([2]), torch.tensor([0, 1]), g_cams)
        tensor([[ True, False]])
    """
    return (q_cams.unsqueeze(1) == _SYSU_ROOM_RGB) & (g_cams.unsqueeze(0) == _SYSU_ROOM_IR)


def exclude_same_camera(q_ids: Tensor, q_cams: Tensor, g_ids: Tensor, g_cams: Tensor) -> Tensor:
    """Drop every gallery item from the query's camera, of any identity (MPANet's SYSU rule after 3 → 2).

    Examples:
        >>> import torch
        >>> from vireid_layers.evaluation import exclude_same_camera
        >>> exclude_same_camera(torch.tensor([0]), torch.tensor([2]), torch.tensor([0, 1]), torch.tensor([2, 1]))
        tensor([[ True, False]])
    """
    return g_cams.unsqueeze(0) == q_cams.unsqueeze(1)
