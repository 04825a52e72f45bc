"""QAT simulates what TFLite runs: every convolution's weights are fake-quantized, the
normalisation can move into the input quantization, and pruned zeros survive QAT."""
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _train_images(sample_data, size=96):
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.preprocess import PreprocessSpec

    ds = load_dataset(sample_data, "train")
    return load_images(ds.samples, PreprocessSpec(size=size), ds.labels, progress=False), len(ds.labels)


def test_input_quantization_only_where_uint8_can_express_the_normalisation():
    from shelfsight.export.convert import input_quantization
    from shelfsight.preprocess import PreprocessSpec

    assert input_quantization(PreprocessSpec(size=224)) == (1 / 128, 127)  # EfficientNet-Lite
    assert input_quantization(PreprocessSpec(size=224, mean=(127.5,) * 3, std=(127.5,) * 3)) is None
    assert input_quantization(PreprocessSpec(size=224, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))) is None


def test_every_convolution_is_weight_quantized_and_the_input_range_is_exact(tiny_run, sample_data):
    from shelfsight.export.options import QATOptions
    from shelfsight.export.qat import quantize_aware_train
    from shelfsight.training.model import load_model
    from shelfsight.training.tf_env import keras

    data, _ = _train_images(sample_data)
    result = quantize_aware_train(load_model(tiny_run / "model.keras"), data, QATOptions(epochs=1),
                                  normalised_input=(1 / 128, 127), progress=False)
    convs = [layer for layer in result.model.layers
             if isinstance(getattr(layer, "layer", None), (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    assert len(convs) == 49
    # tfmot's own layout transform leaves the 33 convolutions that feed a ReLU with float weights
    unquantized = [layer.name for layer in convs if not layer.quantize_config.get_weights_and_quantizers(layer.layer)]
    assert unquantized == []
    quantizers = [layer for layer in result.model.layers if type(layer).__name__ == "QuantizeLayer"]
    assert len(quantizers) == 1
    bounds = sorted(float(v.numpy()) for v in quantizers[0].weights if v.name.split(":")[0].endswith(("_min", "_max")))
    assert bounds == pytest.approx([-127 / 128, 1.0])
    assert "normalize" not in [layer.name.removeprefix("quant_") for layer in result.model.layers]


def test_pruned_zeros_survive_qat(tiny_run, sample_data):
    from shelfsight.export.options import PruneOptions, QATOptions
    from shelfsight.export.prune import prune_model
    from shelfsight.export.qat import quantize_aware_train
    from shelfsight.training.model import load_model

    data, classes = _train_images(sample_data)
    pruned, sparsity = prune_model(load_model(tiny_run / "model.keras"), data, classes,
                                   PruneOptions(sparsity=0.5, epochs=1, frequency=1), progress=False)
    result = quantize_aware_train(pruned, data, QATOptions(epochs=1, learning_rate=1e-3), preserve_sparsity=True,
                                  progress=False)
    kernels = {layer.name.removeprefix("quant_"): variable.numpy() for layer in result.model.layers
               if layer.name.removeprefix("quant_") in sparsity["layers"]
               for variable in layer.trainable_weights if variable.name.endswith("/kernel:0")}
    assert len(kernels) == len(sparsity["layers"])
    for name, kernel in kernels.items():
        assert np.mean(kernel == 0) >= 0.49, name


def test_pruning_distils_the_unpruned_model_closer_than_the_labels(tiny_run, sample_data):
    """Same sparsity, steps and learning rate: only what the pruned model learns from differs."""
    from shelfsight.export.options import PruneOptions
    from shelfsight.export.prune import prune_model
    from shelfsight.training.model import load_model, predict
    from shelfsight.training.tf_env import keras

    data, classes = _train_images(sample_data)
    _, reference = predict(load_model(tiny_run / "model.keras"), data.images)

    def cosine_after(distil: bool) -> float:
        keras.utils.set_random_seed(0)
        pruned, sparsity = prune_model(load_model(tiny_run / "model.keras"), data, classes,
                                       PruneOptions(sparsity=0.6, epochs=2, frequency=1, learning_rate=1e-3,
                                                    distill=distil), progress=False)
        assert sparsity["overall"] >= 0.6 - 1e-3
        _, emb = predict(pruned, data.images)
        return float(np.mean(np.sum(emb * reference, axis=1)))

    labels, distilled = cosine_after(False), cosine_after(True)
    print("embedding cosine to the unpruned model: labels", labels, "distilled", distilled)
    assert distilled > labels + 0.01, (labels, distilled)
