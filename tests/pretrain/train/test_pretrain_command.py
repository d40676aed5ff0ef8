import json

import numpy as np
from PIL import Image

from curation.cli import main
from pretrain.train.checkpoint import latest_checkpoint

TINY = [
    "backbone.arch=vit",
    "backbone.patch_size=8",
    "backbone.embed_dim=32",
    "backbone.depth=2",
    "backbone.num_heads=2",
    "loss.dino_head.out_dim=64",
    "loss.dino_head.hidden_dim=32",
    "loss.dino_head.bottleneck_dim=16",
    "crops.global_crops_size=32",
    "crops.local_crops_size=16",
    "crops.local_crops_number=2",
    "batch_size_per_rank=2",
    "num_workers=0",
    "checkpoint_every=1",
    "keep_checkpoints=1",
]


def test_pretrain_on_a_plain_image_folder_and_resume(tmp_path, capsys):
    images = tmp_path / "unlabeled" / "any" / "nesting"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(images / f"{i}.jpg")
    out = tmp_path / "run"
    args = ["--images", str(tmp_path / "unlabeled"), "--out", str(out), *TINY]
    assert main(["pretrain", *args, "--max-iterations", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iterations"] == 2 and np.isfinite(summary["last_loss"])
    assert latest_checkpoint(out / "checkpoints").name == "iter_00000002"
    assert main(["pretrain", *args, "--max-iterations", "3"]) == 0
    assert latest_checkpoint(out / "checkpoints").name == "iter_00000003"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1, 2]


def test_pretrain_refuses_a_config_that_cannot_work(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "imgs" / "a.png")
    args = ["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"), *TINY]
    assert main(["pretrain", *args, "crops.local_crops_size=12"]) == 2
    assert "local_crops_size=12 is not a multiple of the patch size 8" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
