"""Readers (IDX, Purchase-format text, tfds mock data), splits and the keep matrix."""

import gzip
import os

import ml_collections
import numpy as np
import pytest

from mia_jax import data
from mia_jax.data import membership, sources
from mia_jax.errors import ConfigError, DataError


def write_idx(path, array, compress=True):
  codes = {np.uint8: 0x08}
  header = bytes([0, 0, codes[array.dtype.type], array.ndim])
  header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  payload = header + array.tobytes()
  opener = gzip.open if compress else open
  with opener(path, "wb") as f:
    f.write(payload)
  return payload


def make_idx_dir(folder, n_train=30, n_test=10, size=6):
  rng = np.random.default_rng(0)
  arrays = {
      "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
      "train-labels-idx1-ubyte.gz": rng.integers(0, 10, (n_train,), dtype=np.uint8),
      "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
      "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, (n_test,), dtype=np.uint8),
  }
  arrays["train-labels-idx1-ubyte.gz"][0] = 9
  for name, arr in arrays.items():
    write_idx(os.path.join(folder, name), arr)
  return arrays


def data_config(**kw):
  c = ml_collections.ConfigDict(dict(name="digits", dir="", file="", seed=0, pool_size=0,
                                     val_size=0, test_size=0, normalise=True, num_classes=0,
                                     label_base=-1))
  c.update(kw)
  return c


def test_idx_reader_roundtrip(tmp_path):
  arrays = make_idx_dir(tmp_path)
  for name, arr in arrays.items():
    np.testing.assert_array_equal(sources.read_idx(str(tmp_path / name)), arr)


def test_fashion_mnist_reader_joins_splits(tmp_path):
  arrays = make_idx_dir(tmp_path)
  raw = sources.load_fashion_mnist(data_config(name="fashion_mnist", dir=str(tmp_path)))
  assert raw.x.shape == (40, 6, 6, 1) and raw.is_image and raw.num_classes == 10
  np.testing.assert_allclose(raw.x[:30, ..., 0], arrays["train-images-idx3-ubyte.gz"] / 255.0)
  np.testing.assert_array_equal(raw.y[30:], arrays["t10k-labels-idx1-ubyte.gz"])


@pytest.mark.parametrize("damage", ["truncate_gzip", "truncate_payload", "bad_magic", "not_gzip"])
def test_corrupt_idx_is_a_data_error(tmp_path, damage):
  path = str(tmp_path / "x-idx3-ubyte.gz")
  payload = write_idx(path, np.zeros((5, 4, 4), np.uint8))
  if damage == "truncate_gzip":
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
  elif damage == "truncate_payload":
    with gzip.open(path, "wb") as f:
      f.write(payload[:-7])
  elif damage == "bad_magic":
    with gzip.open(path, "wb") as f:
      f.write(b"\x12\x34" + payload[2:])
  else:
    open(path, "wb").write(b"plain text, no gzip here")
  with pytest.raises(DataError) as e:
    sources.read_idx(path)
  assert "\n" not in str(e.value) and path in str(e.value)


def test_missing_idx_dir_says_how_to_mend(tmp_path):
  with pytest.raises(DataError, match="data.dir"):
    sources.load_fashion_mnist(data_config(name="fashion_mnist", dir=str(tmp_path / "nowhere")))


def test_tabular_reader(tmp_path):
  path = tmp_path / "purchase.txt"
  rows = ["3,1,0,1,1", "1,0,0,1,0", "2,1,1,1,1", "3,0,1,0,0"]
  path.write_text("\n".join(rows) + "\n")
  raw = sources.load_tabular(data_config(name="purchase100", file=str(path), label_base=1))
  np.testing.assert_array_equal(raw.y, [2, 0, 1, 2])   # 1-based labels shifted
  np.testing.assert_array_equal(raw.x[1], [0, 0, 1, 0])
  assert not raw.is_image and raw.num_classes == 3
  # 1..C with every class present and C = num_classes says it is 1-based by itself
  raw = sources.load_tabular(data_config(name="purchase100", file=str(path), num_classes=3))
  np.testing.assert_array_equal(raw.y, [2, 0, 1, 2])
  raw = sources.load_tabular(data_config(name="purchase100", file=str(path), num_classes=100,
                                         label_base=1))
  assert raw.num_classes == 100
  # 0-based labels with every class present need nothing said
  path.write_text("\n".join(["0,1,1", "2,0,0", "1,1,0"]) + "\n")
  raw = sources.load_tabular(data_config(name="texas100", file=str(path)))
  np.testing.assert_array_equal(raw.y, [0, 2, 1])
  assert raw.num_classes == 3


@pytest.mark.parametrize("labels,kw,match", [
    # a 0-based file without class 0 reads 1..3: it must not be shifted down one class
    ([1, 2, 3, 3], {}, "labels run 1..3"),
    ([1, 2, 3, 3], {"num_classes": 4}, "labels run 1..3"),   # 1-based would need max 4
    ([0, 1, 3, 3], {}, "no example of class"),               # a gap
    ([1, 2, 3, 3], {"label_base": 2}, "give 0 or 1"),
    ([0, 1, 2, 2], {"label_base": 1}, "do not fit"),                      # 0 below base 1
])
def test_tabular_labels_that_do_not_say_their_base_are_refused(tmp_path, labels, kw, match):
  path = tmp_path / "t.txt"
  path.write_text("".join(f"{y},1,0\n" for y in labels))
  with pytest.raises(DataError, match=match) as e:
    sources.load_tabular(data_config(name="texas100", file=str(path), **kw))
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_tabular_non_finite_feature_is_refused_with_its_place(tmp_path, bad):
  path = tmp_path / "t.txt"
  path.write_text(f"0,1,0\n1,0,1\n0,0,{bad}\n1,1,1\n")
  with pytest.raises(DataError, match=r"record 3 holds .*inf|record 3 holds nan"):
    sources.load_tabular(data_config(name="purchase100", file=str(path)))


def test_idx_files_are_checked_against_each_other(tmp_path):
  make_idx_dir(tmp_path)
  cfg = data_config(name="fashion_mnist", dir=str(tmp_path))
  # the images saved under the labels file's name
  images = sources.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz"))
  write_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"), images)
  with pytest.raises(DataError, match="not the labels it is named for"):
    sources.load_fashion_mnist(cfg)
  # one corrupt label byte (200) is not a 201st class
  make_idx_dir(tmp_path)
  labels = sources.read_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz")).copy()
  labels[4] = 200
  write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"), labels)
  with pytest.raises(DataError, match="label 200 at index 4"):
    sources.load_fashion_mnist(cfg)
  # test images of another size than the train images
  make_idx_dir(tmp_path)
  write_idx(str(tmp_path / "t10k-images-idx3-ubyte.gz"), np.zeros((10, 5, 5), np.uint8))
  with pytest.raises(DataError, match="train images are"):
    sources.load_fashion_mnist(cfg)


def test_check_raw_refuses_non_finite_inputs_and_labels_out_of_range():
  x = np.zeros((4, 3), np.float32)
  data.check_raw(sources.RawData(x=x, y=np.array([0, 1, 1, 0]), num_classes=2, is_image=False),
                 "t")
  x[2, 1] = np.nan
  with pytest.raises(DataError, match="first: example 2"):
    data.check_raw(sources.RawData(x=x, y=np.array([0, 1, 1, 0]), num_classes=2,
                                   is_image=False), "t")
  with pytest.raises(DataError, match="labels range over 0..2 but it has 2 classes"):
    data.check_raw(sources.RawData(x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 2, 0]),
                                   num_classes=2, is_image=False), "t")


@pytest.mark.parametrize("text,match", [("1,0,1\n2,0\n", "same number"), ("1,a,0\n", "not numbers"),
                                        ("", "no records")])
def test_tabular_reader_rejects_bad_files(tmp_path, text, match):
  path = tmp_path / "bad.txt"
  path.write_text(text)
  with pytest.raises(DataError, match=match):
    sources.load_tabular(data_config(name="texas100", file=str(path)))


def test_tabular_missing_file():
  with pytest.raises(DataError, match="not found"):
    sources.load_tabular(data_config(name="purchase100", file="/nonexistent/p100.txt"))


def test_tfds_reader_on_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    raw = sources.load_tfds(data_config(name="tfds:mnist"))
  assert raw.x.ndim == 4 and raw.x.shape[1:] == (28, 28, 1)
  assert raw.num_classes == 10 and len(raw.y) == len(raw.x) == 24   # train and test joined
  assert 0.0 <= raw.x.min() and raw.x.max() <= 1.0


def test_digits_split_and_normalisation():
  ds = data.load(data_config(pool_size=1000, val_size=200))
  assert len(ds.pool_y) == 1000 and len(ds.val_y) == 200 and len(ds.test_y) == 597
  assert ds.input_shape == (8, 8, 1)
  np.testing.assert_allclose(ds.pool_x.mean(), 0.0, atol=1e-5)
  np.testing.assert_allclose(ds.pool_x.std(), 1.0, atol=1e-3)


def test_split_too_large_is_a_config_error():
  with pytest.raises(ConfigError, match="too few"):
    data.load(data_config(pool_size=5000))


def test_unknown_dataset():
  with pytest.raises(ConfigError, match="data.name"):
    data.check_name("cifar11")


def test_keep_matrix_matches_lira_reference():
  m, n, pkeep = 16, 300, 0.5
  keep = membership.keep_matrix(7, m, n, pkeep)
  # LiRA's reference draw, written out with the same generator.
  u = np.random.default_rng(7).uniform(0, 1, size=(m, n))
  np.testing.assert_array_equal(keep, u.argsort(0) < int(pkeep * m))
  assert keep.dtype == bool and keep.shape == (m, n)
  np.testing.assert_array_equal(keep.sum(0), int(pkeep * m))   # every example IN for pkeep*M
  assert abs(keep.sum(1).mean() - pkeep * n) < 1e-9 * n + 1      # models hold pkeep*N on average
  np.testing.assert_array_equal(keep, membership.keep_matrix(7, m, n, pkeep))
  assert not np.array_equal(keep, membership.keep_matrix(8, m, n, pkeep))


@pytest.mark.parametrize("m,pkeep", [(1, 0.5), (16, 0.0), (16, 1.0), (4, 0.1)])
def test_keep_matrix_rejects_bad_values(m, pkeep):
  with pytest.raises(ConfigError):
    membership.keep_matrix(0, m, 10, pkeep)


def _digits_npz(path, split_test=0):
  """scikit-learn's digits as the .npz source takes them (x [N, 8, 8, 1] float in [0, 1])."""
  raw = sources.load_digits(None)
  if split_test:
    np.savez(path, x=raw.x[:-split_test], y=raw.y[:-split_test], x_test=raw.x[-split_test:],
             y_test=raw.y[-split_test:])
  else:
    np.savez(path, x=raw.x, y=raw.y)
  return raw


@pytest.mark.parametrize("split_test", [0, 297])
def test_npz_source_gives_the_split_of_the_same_arrays(tmp_path, split_test):
  """The digits saved as x, y (or x, y, x_test, y_test) load into the very pool, val and test
  of the built-in digits source: same join, shuffle, split and normalisation."""
  path = str(tmp_path / "digits.npz")
  _digits_npz(path, split_test)
  mine = data.load(data_config(name=path, pool_size=1000, val_size=200))
  ref = data.load(data_config(pool_size=1000, val_size=200))
  for field in ("pool_x", "pool_y", "val_x", "val_y", "test_x", "test_y"):
    np.testing.assert_array_equal(getattr(mine, field), getattr(ref, field))
  assert mine.num_classes == 10 and mine.is_image and mine.name == path


def test_npz_uint8_images_and_tabular_features(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 5, 5), dtype=np.uint8)
  np.savez(tmp_path / "img.npz", x=images, y=np.arange(40) % 4)
  raw = data.load_raw(data_config(name=str(tmp_path / "img.npz")))
  assert raw.x.shape == (40, 5, 5, 1) and raw.is_image and raw.num_classes == 4
  np.testing.assert_allclose(raw.x[..., 0], images.astype(np.float64) / 255.0, rtol=1e-6)
  feats = rng.normal(size=(30, 7)).astype(np.float32)
  np.savez(tmp_path / "tab.npz", x=feats, y=(np.arange(30) % 3).astype(np.float64))
  raw = data.load_raw(data_config(name=str(tmp_path / "tab.npz"), num_classes=5))
  assert not raw.is_image and raw.num_classes == 5 and raw.y.dtype == np.int32
  np.testing.assert_array_equal(raw.x, feats)


@pytest.mark.parametrize("arrays,match", [
    (dict(y=np.zeros(4)), "no array 'x'"),
    (dict(x=np.zeros((4, 2)), y=np.arange(4), x_test=np.zeros((2, 2))), "only one of"),
    (dict(x=np.zeros((4, 2)), y=np.arange(3)), "do not match"),
    (dict(x=np.zeros((4, 2)), y=np.arange(4), x_test=np.zeros((2, 3)), y_test=np.arange(2)),
     "one input shape"),
    (dict(x=np.array([[0.0], [np.nan], [1.0]]), y=np.array([0, 1, 0])), "NaN or infinite"),
    (dict(x=np.zeros((3, 2)), y=np.array([0, 2, 0])), r"without class\(es\) \[1\]"),
    (dict(x=np.zeros((3, 2)), y=np.array([1, 2, 1])), "relabel them 0..K-1"),
    (dict(x=np.zeros((3, 2)), y=np.array([0.0, 1.5, 0.0])), "must be integers"),
])
def test_npz_source_refuses_bad_arrays_in_one_line(tmp_path, arrays, match):
  path = str(tmp_path / "bad.npz")
  np.savez(path, **arrays)
  with pytest.raises(DataError, match=match) as e:
    data.load_raw(data_config(name=path))
  assert "\n" not in str(e.value)


def test_npz_source_missing_or_corrupt_file(tmp_path):
  data.check_name(str(tmp_path / "absent.npz"))    # a name check reads no file
  with pytest.raises(DataError, match="not found"):
    data.load_raw(data_config(name=str(tmp_path / "absent.npz")))
  (tmp_path / "junk.npz").write_bytes(b"not a zip file")
  with pytest.raises(DataError, match="not a readable .npz"):
    data.load_raw(data_config(name=str(tmp_path / "junk.npz")))
