"""The built-in synthetic cross-modality person dataset, written to disk in SYSU-MM01's layout.

:func:`make_synthetic_dataset` renders small person crops procedurally (numpy + PIL, no download, no model)
and writes them exactly as SYSU-MM01 :cite:`wu2017sysu` is distributed, so that
:func:`~vireid_layers.data.datasets.sysu.read_sysu_mm01`, the samplers and the evaluation protocols run on it
unchanged; :func:`read_synthetic` is that reader under the name ``"synthetic"``::

    root/
      cam1/ cam2/ cam4/ cam5/     visible cameras (cam1, cam2 indoor; cam4, cam5 outdoor)
      cam3/ cam6/                 infrared cameras (cam3 indoor; cam6 outdoor): grey, R = G = B
        0001/0001.jpg ...         one folder per identity, images numbered from 0001
      exp/train_id.txt            one line of comma-separated ids each; train + val ids are the training
      exp/val_id.txt              identities, test ids the test identities
      exp/test_id.txt
      synthetic.json              the manifest: generator version, parameters, splits, completeness

Every identity has latent attributes (body shape, clothing colours with hues shared between identities,
clothing patterns, accessories, gait, and per-garment thermal emissivities that do not depend on hue).
Every image is drawn from a generator seeded by ``(seed, identity, camera, image number)`` alone, so any image
can be regenerated on its own (:func:`render_synthetic_image`) and the files do not depend on the order in
which they are written. The documentation page ``docs/synthetic.rst`` describes the generative model.

The package has one module per concept; the public names are re-exported here:

================================ ===============================================================================
module                           contents
================================ ===============================================================================
:mod:`~.synthetic.cameras`       the six cameras: viewpoints, framing, background, light, sensor
:mod:`~.synthetic.identities`    identity sampling: body, clothing colours and patterns, accessories, materials
:mod:`~.synthetic.figure`        a pose per image and the part-label map of the drawn person
:mod:`~.synthetic.scene`         painting the person, the background, illumination and the infrared sensor
:mod:`~.synthetic.renderer`      :func:`render_synthetic_image`, :data:`SYNTHETIC_GENERATOR_VERSION`
:mod:`~.synthetic.manifest`      :data:`SYNTHETIC_MANIFEST`, the splits, the list of expected files
:mod:`~.synthetic.writer`        :func:`make_synthetic_dataset`, :func:`read_synthetic`
================================ ===============================================================================

:func:`save_sample_grid` works on any dataset in SYSU-MM01's layout and lives in
:mod:`vireid_layers.data.preview`; it is re-exported here.
"""

from __future__ import annotations

from ...preview import save_sample_grid
from .manifest import SYNTHETIC_JPEG_QUALITY, SYNTHETIC_MANIFEST
from .renderer import SYNTHETIC_GENERATOR_VERSION, render_synthetic_image
from .writer import make_synthetic_dataset, read_synthetic

__all__ = [
    "SYNTHETIC_GENERATOR_VERSION",
    "SYNTHETIC_JPEG_QUALITY",
    "SYNTHETIC_MANIFEST",
    "make_synthetic_dataset",
    "read_synthetic",
    "render_synthetic_image",
    "save_sample_grid",
]
