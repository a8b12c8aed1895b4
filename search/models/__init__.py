"""Models the engine runs at query and write time: CLIP encoders and image generators.

- `encoder.py` — `load_encoder`, the one factory; `Encoder` is the one place that normalises.
- `query_runtime.py`, `query_towers.py` — how query encodes run: threads by load, int8,
  torch or ONNX Runtime (`onnx_towers.py`: export, cache, sessions); `text_prefix.py` —
  the text tower run only up to the end-of-text token.
- `configs/` — our open_clip JSON configs (`house`, `house-vit`).
- `weights/` — the shipped house weights (and their NOTICE); `licenses/` — their data licences.
- `generator.py` + `generators/` — the image-generator interface, registry and backends.

Training these models is a batch job and lives in `indexer.house` / `indexer.training`.
"""

from search.models.encoder import HOUSE_MODEL, RANDOM_INIT, Encoder, load_encoder
from search.models.encoder import WEIGHTS_FILE as ENCODER_WEIGHTS_FILE
from search.models.generator import ImageGenerator, load_generator
from search.models.generators.house import WEIGHTS_FILE as GENERATOR_WEIGHTS_FILE
from search.models.generators.house_nets import (
    Decoder,
    GeneratorConfig,
    PosteriorEncoder,
    Prior,
    save_generator,
)

__all__ = [
    "ENCODER_WEIGHTS_FILE", "GENERATOR_WEIGHTS_FILE", "HOUSE_MODEL", "RANDOM_INIT", "Decoder",
    "Encoder", "GeneratorConfig", "ImageGenerator", "PosteriorEncoder", "Prior",
    "load_encoder", "load_generator", "save_generator",
]
