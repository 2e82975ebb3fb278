"""The higher level searching only macro-action sequences that play contains (Hi-LeWM's "search only macro-actions
encoded from training trajectories"), instead of the shipped free search (CEM: Gaussian candidates refitted over 3
rounds, the play library only in the first round's population).

`LibraryActor` is the shipped `Actor` with one change: every replan of the higher level scores `library_samples`
sequences drawn anew from the higher level's play library (cut to subgoal_horizon), plus the plan it kept last time,
and keeps the cheapest by the unchanged `SubgoalObjective` (terminal latent + energy). No Gaussian candidate, no
refit: every plan the higher level can pick is a path the hand really took in play, where the predictor was trained.
With 1024 draws it scores as many sequences per replan as the shipped CEM (1 + 256 + 1 + 256, then 2 x 256, + 1).
"""
import torch

from jepa_actor.actor import Actor


def library_draws(actor: Actor, count: int) -> torch.Tensor:
    """count play macro sequences (subgoal_horizon long: cut, or the last one held), drawn with the actor's
    library generator."""
    library = actor.high_level.library
    horizon = actor.config.subgoal_horizon
    rows = torch.randint(len(library), (count,), generator=actor.library_generator)
    drawn = library[rows.to(library.device), :horizon]
    if drawn.shape[1] < horizon:
        drawn = torch.cat([drawn, drawn[:, -1:].expand(-1, horizon - drawn.shape[1], -1)], 1)
    return drawn


def library_pick(actor: Actor, z: torch.Tensor, goal: torch.Tensor, count: int,
                 keep: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """The cheapest of `count` library draws (and `keep`, a plan (H, 4) to score beside them) -> (macros, cost)."""
    objective = actor.subgoal_objective(z, goal)
    candidates = library_draws(actor, count)
    if keep is not None:
        candidates = torch.cat([keep[None], candidates])
    with torch.inference_mode():
        costs = objective(candidates)
    i = int(torch.argmin(costs))
    return candidates[i].clone(), float(costs[i])


class LibraryActor(Actor):
    """The shipped actor whose higher level picks among play's macro sequences only."""
    library_samples = 1024

    def plan_subgoal(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        c = self.config
        if self.subgoal is None or self.steps_since_subgoal >= c.subgoal_every:
            keep = self.subgoal_macros if self.subgoal is not None else None
            macros, _ = library_pick(self, z, goal, self.library_samples, keep)
            self.subgoal_macros = macros
            with torch.no_grad():
                self.subgoal = self.high_level.rollout(z.reshape(1, -1), macros[None])[0, 0]
            self.steps_since_subgoal = 0
        self.steps_since_subgoal += 1
        return self.subgoal
