r"""Evaluation protocols of SYSU-MM01, RegDB and LLCM, the direction switch, and mean ± std over trials.

A protocol is a small frozen object that answers four questions about a :class:`~vireid_layers.data.VIReIDDataset`:

* which test images are the **queries** and which form the **gallery** of trial :math:`t`
  (:meth:`EvaluationProtocol.query`, :meth:`EvaluationProtocol.gallery`, :meth:`EvaluationProtocol.plan`);
* which **stem** (modality branch of the model) each side goes through
  (:attr:`~EvaluationProtocol.query_modality`, :attr:`~EvaluationProtocol.gallery_modality`);
* which gallery items a query must **not** see (:attr:`~EvaluationProtocol.exclude`, a rule of
  :mod:`vireid_layers.evaluation.exclusion`);
* which CMC definition is **reported** (:attr:`~EvaluationProtocol.reported_cmc`; both are always computed).

The one-argument direction switch is ``direction``: it picks the query and gallery sets *and* the stems
together, so a visible→infrared evaluation can never send visible queries through the infrared stem.

:func:`evaluate_protocol` runs a protocol end to end from an ``extract(records, modality)`` callable:
features of every image used by any trial are extracted once, through the stem of its side, and each trial
ranks its gallery by cosine similarity (see :func:`negative_cosine_similarity`). Its
:class:`ProtocolResult` states how it was obtained (:attr:`ProtocolResult.settings`) and prints it under its
table.

Strings name protocols only at the configuration boundary (:func:`build_protocol`, :data:`PROTOCOLS`); the
protocol classes take validated values and contain no dispatch on names.

One concept per module: ``direction`` (:class:`Direction`), ``sampling`` (candidates and gallery draws),
``sysu_permutation`` (the official ``rand_perm_cam.mat``), ``distances``, ``settings`` (what a result states),
``results`` (:class:`TrialResult`, :class:`ProtocolResult`), ``tables`` (markdown), ``trials``
(:class:`TrialPlan` and the scoring both runners share), ``base`` (:class:`EvaluationProtocol`), ``sysu``,
``regdb``, ``llcm`` (one protocol each), ``runner`` (:func:`evaluate_protocol`) and ``registry``.
"""

from ..exclusion import exclude_sysu_indoor_camera_reversed
from .base import EvaluationProtocol
from .direction import Direction
from .distances import Distance, negative_cosine_similarity, negative_dot_product, squared_euclidean_distance
from .llcm import LLCMProtocol
from .regdb import RegDBProtocol
from .registry import PROTOCOLS, ProtocolFactory, build_protocol, register_protocol
from .results import CMCDefinition, ProtocolResult, TrialResult
from .runner import Extractor, evaluate_protocol
from .sysu import SYSU_INFRARED_CAMERAS, SYSU_VISIBLE_CAMERAS, SYSUProtocol
from .sysu_permutation import SYSUPermutation, load_sysu_permutation, parse_sysu_permutation
from .tables import format_comparison
from .trials import TrialPlan, TrialSelection

__all__ = [
    "PROTOCOLS",
    "SYSU_INFRARED_CAMERAS",
    "SYSU_VISIBLE_CAMERAS",
    "CMCDefinition",
    "Direction",
    "Distance",
    "EvaluationProtocol",
    "Extractor",
    "LLCMProtocol",
    "ProtocolFactory",
    "ProtocolResult",
    "RegDBProtocol",
    "SYSUPermutation",
    "SYSUProtocol",
    "TrialPlan",
    "TrialResult",
    "TrialSelection",
    "build_protocol",
    "evaluate_protocol",
    "exclude_sysu_indoor_camera_reversed",
    "format_comparison",
    "load_sysu_permutation",
    "negative_cosine_similarity",
    "negative_dot_product",
    "squared_euclidean_distance",
    "parse_sysu_permutation",
    "register_protocol",
]
