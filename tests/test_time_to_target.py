"""Stopping at a target accuracy, the run's clock, the training flags of issue 13 on the command
line, and the speedrun recipe's accuracy on a subset (accuracy only: times are never asserted)."""
import json

import numpy as np
import pytest

from fastnn import backends, optim, schedules
from fastnn.cli import main, parser
from fastnn.errors import ConfigError
from fastnn.recipes import RECIPES
from fastnn.train import Trainer

from .test_hardening_training import tiny_data, tiny_model


def evaluated_run(target=None):
    """A numpy run of 3 epochs evaluated every 3 steps; ``at_evaluation``: its parameters and
    buffers at each evaluation."""
    backends.use("numpy")
    x, y = tiny_data(320)
    test = tiny_data(200, seed=9)
    trainer = Trainer(tiny_model(), optim.make("adam", lr=0.01), batch_size=16, progress=False)
    trainer.at_evaluation, evaluate_test = [], trainer.evaluate_test
    trainer.evaluate_test = lambda: trainer.at_evaluation.append(trainer.model.state_arrays()) or evaluate_test()
    trainer.fit(x, y, epochs=3, test=test, eval_every=3, target_accuracy=target)
    return trainer


def test_target_accuracy_stops_at_the_first_evaluation_that_reaches_it():
    free = evaluated_run()  # no target: 60 steps, an evaluation every 3
    accuracies = [e["test_accuracy"] for e in free.evaluations]
    assert [e["step"] for e in free.evaluations] == list(range(3, 61, 3)) and free.seconds_to_target is None
    # a target first reached mid-run, by an evaluation that is not the first nor the last
    first = next(i for i in range(2, len(accuracies) - 2) if accuracies[i] > max(accuracies[:i]))
    target = accuracies[first]

    stopped = evaluated_run(target)
    assert stopped.evaluations == [dict(e, seconds=s["seconds"]) for e, s in
                                   zip(free.evaluations[:first + 1], stopped.evaluations)]
    assert stopped.optimizer.steps == free.evaluations[first]["step"]  # no step after it
    assert stopped.seconds_to_target == stopped.evaluations[-1]["seconds"] <= stopped.clock()
    last = stopped.history[-1]
    assert last["target_reached"] and last["test_accuracy"] == target
    # the model it stops with is the free run's at that evaluation, bit for bit (BatchNorm's
    # running statistics too): the same run up to there, and nothing done to the model after it
    want = free.at_evaluation[first]
    got = stopped.model.state_arrays()
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert stopped.clock() >= stopped.train_seconds > 0 and stopped.eval_seconds > 0


def test_eval_every_and_target_need_a_test_set():
    backends.use("numpy")
    x, y = tiny_data()
    trainer = Trainer(tiny_model(), optim.make("adam"), batch_size=16, progress=False)
    with pytest.raises(ConfigError, match="test="):
        trainer.fit(x, y, eval_every=2)
    with pytest.raises(ConfigError, match="target_accuracy must be a fraction"):
        trainer.fit(x, y, test=(x, y), target_accuracy=99)


def train_args(mnist_dir, *extra):
    return ["train", "--model", "mlp", "--epochs", "1", "--limit", "1000", "--data", str(mnist_dir),
            "--threads", "1", "--no-progress", *extra]


def test_the_metrics_say_when_the_target_was_reached(mnist_dir, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    assert main(train_args(mnist_dir, "--epochs", "3", "--lr", "0.005", "--schedule", "cosine", "--warmup", "5",
                           "--eval-every", "4", "--target-accuracy", "80%", "--metrics", str(metrics))) == 0
    data = json.loads(metrics.read_text())
    assert data["target_accuracy"] == 0.8 and data["schedule"]["name"] == "cosine" and data["schedule"]["warmup"] == 5
    evaluations = data["evaluations"]
    # runs without a target pass 80% by step 16 and end at 85-87% (seeds 0-2, AVX-512 and AVX2 alike)
    assert all(e["test_accuracy"] < 0.8 for e in evaluations[:-1]) and evaluations[-1]["test_accuracy"] >= 0.8
    assert data["seconds_to_target"] == evaluations[-1]["seconds"] > 0
    assert data["train_seconds_total"] == pytest.approx(sum(e["train_seconds"] for e in data["epochs"]))
    assert data["run_seconds"] >= data["seconds_to_target"]
    assert "reached the target 80%" in capsys.readouterr().out


def test_a_target_never_reached_is_reported(mnist_dir, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    assert main(train_args(mnist_dir, "--target-accuracy", "1.0", "--metrics", str(metrics))) == 0
    assert json.loads(metrics.read_text())["seconds_to_target"] is None
    assert "was not reached" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (["--schedule", "cosine", "--lr-decay", "0.5"], "--lr-decay is the step schedule's"),
    (["--schedule", "cosine", "--cycle-momentum"], "add --schedule onecycle"),
    (["--optimizer", "sgd", "--eps", "1e-6"], "optimizer 'sgd'"),
    (["--optimizer", "sgd", "--betas", "0.7,0.9"], "has no betas"),
    (["--augment", "20,5"], "RandomAffine: shift must be a number in [0, 8], got 20.0"),
])
def test_flags_that_do_not_go_together_are_named(mnist_dir, extra, message, capsys):
    assert main(train_args(mnist_dir, *extra)) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--betas", "0.7"], "two numbers BETA1,BETA2"), (["--betas", "0.7,1.2"], "must be in [0, 1)"),
    (["--label-smoothing", "1"], "must be in [0, 1)"), (["--target-accuracy", "120"], "at most 1"),
    (["--augment", "2"], "two numbers SHIFT,DEGREES"), (["--schedule", "linear"], "invalid choice"),
    (["--recipe", "marathon"], "invalid choice"), (["--warmup", "-3"], "whole number >= 0"),
])
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_lr_decay_alone_selects_the_step_schedule_and_a_recipe_sets_defaults(monkeypatch):
    from fastnn import cli
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "train", lambda args: seen.append(args) or 0)
    main(["train", "--lr-decay", "0.5"])
    main(["train", "--recipe", "speedrun", "--lr", "0.02"])
    decay, recipe = seen
    assert (decay.schedule, cli.make_schedule(decay).config()["gamma"]) == ("step", 0.5)
    for name, value in RECIPES["speedrun"].items():
        assert getattr(recipe, name) == (0.02 if name == "lr" else value), name
    assert recipe.given == {"recipe", "lr"}  # a resumed run takes the rest from its checkpoint
    defaults = parser().parse_args(["train"]).run_defaults
    # the schedule the recipe's arguments build: a one-cycle with the recipe's warm-up (compared with
    # one made directly, not with a dict made out of the config under test)
    speedrun = RECIPES["speedrun"]
    config = cli.make_schedule(recipe).config()
    assert config == schedules.make(speedrun["schedule"], warmup=speedrun["warmup"]).config()
    assert config["name"] == "onecycle"
    assert (defaults["schedule"], defaults["label_smoothing"], recipe.label_smoothing) == ("onecycle", 0.1, 0.0)


def test_the_speedrun_recipe_reaches_97_percent_on_a_10000_image_subset(mnist_dir, tmp_path):
    """Its model, batch, optimizer and schedule, on a sixth of the data: accuracy only."""
    metrics = tmp_path / "m.json"
    assert main(["train", "--recipe", "speedrun", "--limit", "10000", "--epochs", "3", "--data", str(mnist_dir),
                 "--threads", "2", "--no-progress", "--metrics", str(metrics)]) == 0
    data = json.loads(metrics.read_text())
    assert (data["recipe"], data["model"], data["batch_size"]) == ("speedrun", RECIPES["speedrun"]["model"],
                                                                    RECIPES["speedrun"]["batch_size"])
    # seeds 0-2 end at 98.25-98.40% (seed 0 on an AVX2 host: 98.37%): 98% left 0.25 points. 97% is
    # 1.25 points under the lowest, and 7 over the 89.9% of dense layers that pass no gradient back
    assert max(e["test_accuracy"] for e in data["epochs"]) >= 0.97


def test_augment_and_label_smoothing_from_the_command_line(mnist_dir, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    assert main(train_args(mnist_dir, "--model", "simple-cnn", "--augment", "--label-smoothing", "0.1",
                           "--metrics", str(metrics))) == 0
    data = json.loads(metrics.read_text())
    assert data["augment"] == {"shift": 2.0, "degrees": 10.0} and data["label_smoothing"] == 0.1
    assert data["epochs"][0]["test_accuracy"] > 0.5  # it learns from warped images (seeds 0-2: 72-79%)
    assert "label smoothing 0.1, augment RandomAffine(shift=2, degrees=10)" in capsys.readouterr().out


@pytest.mark.parametrize("argv,lr", [([], 0.003), (["--schedule", "constant"], 0.001),
                                     (["--optimizer", "sgd"], 0.01), (["--lr", "0.02"], 0.02)])
def test_the_default_run_is_adam_peaking_at_3e_3_on_a_one_cycle(monkeypatch, argv, lr):
    from fastnn import cli
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "train", lambda args: seen.append(args) or 0)
    main(["train", *argv])
    (args,) = seen
    assert cli.make_optimizer(args).base_lr == lr
    assert (args.model, args.epochs, args.label_smoothing) == ("simple-cnn", 5, 0.1)
