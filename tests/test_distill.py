"""QAT's fine-tune distils the float model: a perturbed student is pulled back to its teacher."""
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _cosine(a, b, images):
    ea = a.predict(images.astype(np.float32), verbose=0)["embedding"]
    eb = b.predict(images.astype(np.float32), verbose=0)["embedding"]
    return float(np.mean(np.sum(ea * eb, axis=1)))


def test_distill_pulls_a_perturbed_student_towards_the_teacher(tiny_run, sample_data):
    from shelfsight.datasets import load_dataset, load_images
    from shelfsight.export.distill import distill
    from shelfsight.export.fold import fold_batchnorm
    from shelfsight.preprocess import PreprocessSpec
    from shelfsight.training.model import load_model

    model = load_model(tiny_run / "model.keras")
    teacher = fold_batchnorm(model)
    student = fold_batchnorm(model, skip=("head_dropout",))
    for layer in student.layers:  # only the perturbed layer learns: it must find its way back
        layer.trainable = layer.name == "embedding_dense"
    dense = student.get_layer("embedding_dense")
    kernel, bias = dense.get_weights()
    rng = np.random.default_rng(0)
    dense.set_weights([kernel + rng.normal(0, 0.5 * kernel.std(), kernel.shape).astype(np.float32), bias])
    ds = load_dataset(sample_data, "train")
    images = load_images(ds.samples, PreprocessSpec(size=96), ds.labels, progress=False).images
    held_out = load_images(load_dataset(sample_data, "val").samples, PreprocessSpec(size=96), ds.labels,
                           progress=False).images
    before = _cosine(student, teacher, held_out)

    history = distill(student, teacher, images, learning_rate=1e-3, epochs=3, batch_size=16, progress=False)

    after = _cosine(student, teacher, held_out)
    assert len(history) == 3 and history[-1] > history[0], history
    assert 1.0 - after < 0.5 * (1.0 - before), (before, after)
    # the teacher is never trained
    np.testing.assert_array_equal(teacher.get_layer("embedding_dense").get_weights()[0], kernel)
