"""A plain training loop for motion tests that need a trained model quickly (the shared accelerate loop,
`vidrender/train.py`, is tested on its own in test_train_loop.py)."""

import torch

from vidrender.pipelines.motion.model import MotionModel
from vidrender.pipelines.motion.task import MotionTask


def train_plainly(task: MotionTask) -> MotionModel:
    """Build `task`'s model and train it for `train.steps` Adam steps with a seeded shuffle; returns it in eval mode."""
    config = task.config.train
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = torch.utils.data.DataLoader(task.build_dataset(), batch_size=config.batch_size, shuffle=True,
                                         drop_last=True, generator=torch.Generator().manual_seed(0))
    step = 0
    model.train()
    while step < config.steps:
        for batch in loader:
            loss, _ = task.training_loss(model, batch, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == config.steps:
                break
    return model.eval()
