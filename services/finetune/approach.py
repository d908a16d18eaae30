"""finetune: the plain baseline every repair approach must beat. Fine-tunes the whole model
on the repair split mixed with a slice of the training split (so it does not forget what it
knew), keeping the epoch with the best validation accuracy (early stopping)."""

import copy

import numpy as np

from fixbench.sdk import Approach, Outcome, Param, serve
from fixbench.sdk.torch_helpers import accuracy, classification_loss, minibatches, outputs_are_probabilities


class Finetune(Approach):
    name = "finetune"
    version = "1.0.0"
    level = "baseline"
    summary = ("Fine-tunes all weights on the repair split plus a slice of the training split, "
               "early-stopping on validation accuracy.")
    needs = ("repair_data", "training_data", "validation_data")
    fault_families = ("misclassification",)
    params = (
        Param("epochs", int, 10, "most fine-tuning epochs"),
        Param("learning_rate", float, 5e-4, "Adam learning rate"),
        Param("batch_size", int, 64, "mini-batch size"),
        Param("train_ratio", float, 2.0, "training samples mixed in, as a multiple of the repair split's size"),
        Param("patience", int, 3, "epochs without validation improvement before stopping"),
    )

    def repair(self, ctx):
        import torch

        p = ctx.params
        repair, train, valid = ctx.split("repair"), ctx.split("train"), ctx.split("valid")
        take = min(len(train), int(round(p["train_ratio"] * len(repair))))
        pick = ctx.rng.choice(len(train), size=take, replace=False)
        x = np.concatenate([repair.x, train.x[pick]])
        y = np.concatenate([repair.y, train.y[pick]])

        model = ctx.torch_model()
        probs = outputs_are_probabilities(ctx.original_predictor.scores(valid.x[:64]))
        loss_fn = classification_loss(probs)
        optimiser = torch.optim.Adam(model.parameters(), lr=p["learning_rate"])
        best_acc, best_state, best_epoch, stale = accuracy(model, valid.x, valid.y), copy.deepcopy(model.state_dict()), 0, 0
        ctx.log(f"fine-tuning on {len(repair)} repair + {take} training samples; valid acc before {best_acc:.4f}")
        for epoch in range(1, p["epochs"] + 1):
            model.train()
            for idx in minibatches(len(y), p["batch_size"], ctx.rng):
                if ctx.should_stop():
                    break
                optimiser.zero_grad()
                loss = loss_fn(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
                loss.backward()
                optimiser.step()
            acc = accuracy(model, valid.x, valid.y)
            if acc > best_acc:
                best_acc, best_state, best_epoch, stale = acc, copy.deepcopy(model.state_dict()), epoch, 0
            else:
                stale += 1
            ctx.progress(epoch / p["epochs"], "fine-tune", f"epoch {epoch}: valid acc {acc:.4f}", valid_acc=acc)
            if stale >= p["patience"] or ctx.should_stop():
                break
        if best_epoch == 0:
            return Outcome(model=None, message="no epoch improved validation accuracy; the model is left unchanged",
                           metrics={"valid_acc": best_acc})
        model.load_state_dict(best_state)
        return Outcome(model=ctx.export(model), metrics={"valid_acc": best_acc, "best_epoch": float(best_epoch)})


if __name__ == "__main__":
    serve(Finetune)
