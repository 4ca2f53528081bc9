"""Named recipes: settings of ``fastnn train`` chosen together for one goal (``--recipe NAME``).

A recipe's settings become the command's defaults; flags given on the command line still win,
and a checkpoint keeps them all, as it keeps every run setting.

speedrun: 99.0% MNIST test accuracy in the least wall-clock time on two CPU cores. The net is
the one of the fastest published one-epoch PyTorch recipe (models.speedrun_net), and so are the
batch, Adam's betas and the one-cycle schedule; the figures and how they were chosen are in
README.md ("Time to 99%").
"""
RECIPES = {
    "speedrun": {
        "model": "speedrun-net", "epochs": 1, "batch_size": 256,
        "optimizer": "adam", "lr": 0.01, "betas": [0.7, 0.9], "schedule": "onecycle", "warmup": 47,
        "label_smoothing": 0.0, "target_accuracy": 0.99,
    },
}

# the backend a recipe uses when neither --backend nor FASTNN_BACKEND names one, where it loads
# (the speedrun's time was measured there: see README.md)
RECIPE_BACKENDS = {"speedrun": "cython"}
