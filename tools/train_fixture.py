"""PyTorch fixture for the trainer's optimisers and schedules
(tests/fixtures/train_optim.json, read by tests/train_optim.rs).

Three steps of torch.optim.SGD (momentum, Nesterov, weight decay), Adam (L2 decay) and
AdamW on one small parameter with fixed gradients, one of them in a group with an lr
factor; and the learning rates of MultiStepLR and CosineAnnealingLR. Everything in
float32 as the trainer computes. Regenerate with:

    python3 tools/train_fixture.py > tests/fixtures/train_optim.json
"""
import json
import torch

P0 = [0.5, -1.25, 2.0, 0.0]
GRADS = [[0.1, -0.2, 0.3, 1.0], [-0.4, 0.5, 0.05, -1.0], [0.2, 0.2, -0.6, 0.25]]

CASES = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.5),
}


def run(make, lr_factor):
    w = torch.tensor(P0, dtype=torch.float32, requires_grad=True)
    opt = make([w])
    for g in opt.param_groups:
        g["lr"] *= lr_factor
    out = []
    for g in GRADS:
        w.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        out.append([float(v) for v in w.detach()])
    return out


def lrs(make_sched, steps):
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.5)
    s = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


fixture = {
    "p0": P0,
    "grads": GRADS,
    "optimizers": {name: {"factor_1": run(make, 1.0), "factor_0.5": run(make, 0.5)} for name, make in CASES.items()},
    "multistep": lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.1), 7),
    "cosine": lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6, eta_min=0.05), 7),
}
print(json.dumps(fixture, indent=1))
