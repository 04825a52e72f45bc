"""Tools around the product: the benchmark (`bench/`), the server side of sync (`server/`),
the sample and video makers (`make_grocery_sample`, `make_video`: run them as modules) and
the EfficientNet-Lite0 ONNX maker. Names load on first use (`shelfsight.lazy`), so that a
bench worker or a fault-test device process imports only what it runs."""
from shelfsight.lazy import lazy_exports

# lazy_exports stays importable from here for bench/ and server/ (`from .. import lazy_exports`)
_EXPORTS = {"write_lite0_onnx": "lite0_onnx"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
