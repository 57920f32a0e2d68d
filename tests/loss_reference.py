"""Brute-force references for embedlab's losses, written from the papers' formulas.

Every function loops in plain Python over the explicit pairs, triplets or quadruplets
of its formula. Distances come from ``torch.linalg.vector_norm(x[i] - x[j])`` one pair
at a time, so the references share no code with the vectorised implementations. They
return autograd-connected scalars, so gradients can be compared too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Dist = list[list[Tensor]]


def val(v: Tensor) -> float:
    """The plain number (used only to choose, never inside a formula's value)."""
    return float(v.detach())


def relu(v: Tensor) -> Tensor:
    return torch.clamp(v, min=0.0)


def distances(x: Tensor, fixed_others: bool = False) -> Dist:
    """d[i][j] = ‖x_i − x_j‖; with ``fixed_others`` x_j is a constant (only row i's x_i moves)."""
    n = len(x)
    other = x.detach() if fixed_others else x
    return [[torch.linalg.vector_norm(x[i] - other[j]) for j in range(n)] for i in range(n)]


def positives(y: Sequence[int], a: int) -> list[int]:
    return [p for p in range(len(y)) if p != a and y[p] == y[a]]


def negatives(y: Sequence[int], a: int) -> list[int]:
    return [n for n in range(len(y)) if y[n] != y[a]]


def mean(terms: list[Tensor], x: Tensor) -> Tensor:
    return torch.stack(terms).sum() / len(terms) if terms else x.sum() * 0.0


def contrastive(x: Tensor, y: Sequence[int], pos_margin: float, neg_margin: float) -> Tensor:
    d = distances(x)
    terms = []
    for i in range(len(y)):
        for j in range(len(y)):
            if i == j:
                continue
            if y[i] == y[j]:
                terms.append(0.5 * relu(d[i][j] - pos_margin) ** 2)
            else:
                terms.append(0.5 * relu(neg_margin - d[i][j]) ** 2)
    return mean(terms, x)


# Triplet selections: lists of (a, p, n) as the miners define them.
def batch_hard_triplets(d: Dist, y: Sequence[int]) -> list[tuple[int, int, int]]:
    out = []
    for a in range(len(y)):
        ps, ns = positives(y, a), negatives(y, a)
        if ps and ns:
            p = max(ps, key=lambda j: val(d[a][j]))
            n = min(ns, key=lambda j: val(d[a][j]))
            out.append((a, p, n))
    return out


def batch_all_triplets(d: Dist, y: Sequence[int]) -> list[tuple[int, int, int]]:
    return [(a, p, n) for a in range(len(y)) for p in positives(y, a) for n in negatives(y, a)]


def semi_hard_triplets(
    d: Dist, y: Sequence[int], fallback: str = "easiest"
) -> list[tuple[int, int, int]]:
    """FaceNet's semi-hard negatives; without one: the farthest (TensorFlow), the closest, or none."""
    out = []
    for a in range(len(y)):
        ns = negatives(y, a)
        if not ns:
            continue
        for p in positives(y, a):
            farther = [n for n in ns if val(d[a][n]) > val(d[a][p])]
            if farther:
                n = min(farther, key=lambda j: val(d[a][j]))
            elif fallback == "easiest":
                n = max(ns, key=lambda j: val(d[a][j]))
            elif fallback == "hardest":
                n = min(ns, key=lambda j: val(d[a][j]))
            else:
                continue
            out.append((a, p, n))
    return out


MINERS: dict[str, Callable[[Dist, Sequence[int]], list[tuple[int, int, int]]]] = {
    "batch_hard": batch_hard_triplets,
    "batch_all": batch_all_triplets,
    "semi_hard": semi_hard_triplets,
    "semi_hard_hardest": lambda d, y: semi_hard_triplets(d, y, "hardest"),
    "semi_hard_none": lambda d, y: semi_hard_triplets(d, y, "none"),
}


def triplet(
    x: Tensor,
    y: Sequence[int],
    miner: str,
    margin: float,
    squared: bool = False,
    soft_margin: bool = False,
    nonzero_mean: bool = False,
) -> Tensor:
    d = distances(x)
    terms = []
    for a, p, n in MINERS[miner](d, y):
        ap, an = (d[a][p] ** 2, d[a][n] ** 2) if squared else (d[a][p], d[a][n])
        if soft_margin:
            terms.append(torch.log(1 + torch.exp(ap - an)))
        else:
            terms.append(relu(margin + ap - an))
    if nonzero_mean:
        terms = [t for t in terms if val(t) > 0]
    return mean(terms, x)


def improved_triplet(
    x: Tensor,
    y: Sequence[int],
    miner: str,
    margin: float,
    pos_weight: float,
    neg_weight: float,
    intra_weight: float,
    intra_margin: float,
    squared: bool = True,
) -> Tensor:
    d = distances(x)
    terms = []
    for a, p, n in MINERS[miner](d, y):
        ap, an = (d[a][p] ** 2, d[a][n] ** 2) if squared else (d[a][p], d[a][n])
        t = relu(pos_weight * ap - neg_weight * an + margin)
        terms.append(t + intra_weight * relu(ap - intra_margin))
    return mean(terms, x)


def quadruplet(
    x: Tensor, y: Sequence[int], margin1: float, margin2: float, adaptive: bool = False
) -> Tensor:
    d = distances(x)
    n_ = len(y)
    if adaptive:
        pos = [val(d[i][j]) ** 2 for i in range(n_) for j in range(n_) if i != j and y[i] == y[j]]
        neg = [val(d[i][j]) ** 2 for i in range(n_) for j in range(n_) if y[i] != y[j]]
        gap = sum(neg) / len(neg) - sum(pos) / len(pos)
        margin1, margin2 = margin1 * gap, margin2 * gap
    terms = []
    for a in range(n_):
        ps, ns = positives(y, a), negatives(y, a)
        if not (ps and ns):
            continue
        ap = max((d[a][p] ** 2 for p in ps), key=val)
        an = min((d[a][n] ** 2 for n in ns), key=val)
        t = relu(ap - an + margin1)
        pairs = [
            d[m][k] ** 2
            for m in range(n_)
            for k in range(n_)
            if y[m] != y[k] and y[m] != y[a] and y[k] != y[a]
        ]
        if pairs:
            t = t + relu(ap - min(pairs, key=val) + margin2)
        terms.append(t)
    return mean(terms, x)


def msml(x: Tensor, y: Sequence[int], margin: float) -> Tensor:
    d = distances(x)
    n_ = len(y)
    pos = [d[a][p] for a in range(n_) for p in range(n_) if a != p and y[a] == y[p]]
    neg = [d[m][n] for m in range(n_) for n in range(n_) if y[m] != y[n]]
    return relu(max(pos, key=val) - min(neg, key=val) + margin)


def coupled_clusters(
    x: Tensor, y: Sequence[int], margin: float, centre_gradient: bool = False
) -> Tensor:
    """Without ``centre_gradient`` each class centre is a constant (Liu et al.'s gradient)."""
    terms = []
    for c in sorted(set(y)):
        members = [i for i in range(len(y)) if y[i] == c]
        centre = torch.stack([x[i] for i in members]).sum(0) / len(members)
        if not centre_gradient:
            centre = centre.detach()
        others = [j for j in range(len(y)) if y[j] != c]
        nearest = min((torch.sum((x[j] - centre) ** 2) for j in others), key=val)
        for i in members:
            terms.append(0.5 * relu(torch.sum((x[i] - centre) ** 2) + margin - nearest))
    return mean(terms, x)


def ranked_list(
    x: Tensor,
    y: Sequence[int],
    boundary: float,
    margin: float,
    temperature: float,
    neg_weight: float,
    paper_gradient: bool = True,
) -> Tensor:
    """With ``paper_gradient`` the weights are constants and only the anchor of each list moves."""
    d = distances(x, fixed_others=paper_gradient)
    per_anchor = []
    for a in range(len(y)):
        hard_p = [d[a][p] for p in positives(y, a) if val(d[a][p]) > boundary - margin]
        loss_p = sum(v - (boundary - margin) for v in hard_p) / len(hard_p) if hard_p else 0.0
        hard_n = [d[a][n] for n in negatives(y, a) if val(d[a][n]) < boundary]
        w = [torch.exp(temperature * (boundary - v)) for v in hard_n]
        if paper_gradient:
            w = [wi.detach() for wi in w]
        loss_n = (
            sum(wi * (boundary - v) for wi, v in zip(w, hard_n, strict=True)) / sum(w) if w else 0.0
        )
        per_anchor.append(x.sum() * 0.0 + loss_p + neg_weight * loss_n)
    return mean(per_anchor, x)


def margin_loss(
    x: Tensor,
    y: Sequence[int],
    miner: str,
    margin: float,
    beta: Tensor,
    nu: float,
    per_class: bool,
) -> Tensor:
    d = distances(x)
    total: Tensor = x.sum() * 0.0
    active = 0
    for a, p, n in MINERS[miner](d, y):
        b = beta[y[a]] if per_class else beta[0]
        pull = relu(margin + (d[a][p] - b))  # y = +1
        push = relu(margin - (d[a][n] - b))  # y = -1
        total = total + pull + push + nu * b
        active += int(val(pull) > 0) + int(val(push) > 0)
    return total / max(active, 1)


def center(x: Tensor, y: Sequence[int], centers: Tensor) -> Tensor:
    return mean([torch.sum((x[i] - centers[y[i]]) ** 2) for i in range(len(y))], x)


def cross_entropy(logits: Tensor, y: Sequence[int], eps: float) -> Tensor:
    k = logits.shape[1]
    terms = []
    for i in range(len(y)):
        log_z = torch.log(torch.stack([torch.exp(logits[i, j]) for j in range(k)]).sum())
        q = [eps / k + (1 - eps) * (j == y[i]) for j in range(k)]
        terms.append(-torch.stack([q[j] * (logits[i, j] - log_z) for j in range(k)]).sum())
    return mean(terms, logits)


def unit_sphere_weights(
    d: Sequence[float], dim: int, cutoff: float, nonzero_cutoff: float
) -> list[float]:
    """Distance-weighted sampling probabilities of one anchor's negatives (Wu et al.)."""
    w = []
    for v in d:
        v = max(v, cutoff)
        inv_q = v ** (2 - dim) * (1 - v * v / 4) ** (-(dim - 3) / 2) if v < nonzero_cutoff else 0.0
        w.append(inv_q)
    if sum(w) == 0:
        w = [1.0] * len(d)
    return [v / sum(w) for v in w]


# Cosine-similarity losses (circle, multi-similarity, SupCon, proxies, margin softmax).
def cos_sim(u: Tensor, v: Tensor) -> Tensor:
    return torch.dot(u, v) / (torch.linalg.vector_norm(u) * torch.linalg.vector_norm(v))


def similarities(x: Tensor, y: Tensor | None = None) -> Dist:
    y = x if y is None else y
    return [[cos_sim(x[i], y[j]) for j in range(len(y))] for i in range(len(x))]


def cosine_contrastive(x: Tensor, y: Sequence[int], pos_margin: float, neg_margin: float) -> Tensor:
    """XBM's contrastive loss: Σ_i [Σ_{p ≠ i} [m₊ − s_ip]₊ + Σ_{n: s_in > m₋} s_in] / N."""
    s = similarities(x)
    total = x.sum() * 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            if j == i:
                continue
            if y[j] == y[i]:
                total = total + relu(pos_margin - s[i][j])
            elif val(s[i][j]) > neg_margin:
                total = total + s[i][j]
    return total / len(y)


def log1p_sum_exp(values: list[Tensor], like: Tensor) -> Tensor:
    return torch.log(1 + sum(torch.exp(v) for v in values)) if values else like.sum() * 0.0


def circle(x: Tensor, y: Sequence[int], m: float, gamma: float) -> Tensor:
    s = similarities(x)
    per_anchor = []
    for a in range(len(y)):
        ps, ns = positives(y, a), negatives(y, a)
        if not (ps and ns):
            continue
        sum_n = sum(torch.exp(gamma * relu(s[a][n].detach() + m) * (s[a][n] - m)) for n in ns)
        sum_p = sum(
            torch.exp(-gamma * relu(1 + m - s[a][p].detach()) * (s[a][p] - (1 - m))) for p in ps
        )
        per_anchor.append(torch.log(1 + sum_n * sum_p))
    return mean(per_anchor, x)


def ms_mined_pairs(
    s: Dist, y: Sequence[int], a: int, epsilon: float | None
) -> tuple[list[int], list[int]]:
    ps, ns = positives(y, a), negatives(y, a)
    if epsilon is None:
        return ps, ns
    if not (ps and ns):
        return [], []
    hardest_p = min(val(s[a][p]) for p in ps)
    hardest_n = max(val(s[a][n]) for n in ns)
    return (
        [p for p in ps if val(s[a][p]) - epsilon < hardest_n],
        [n for n in ns if val(s[a][n]) + epsilon > hardest_p],
    )


def multi_similarity(
    x: Tensor,
    y: Sequence[int],
    alpha: float,
    beta: float,
    base: float,
    epsilon: float | None = None,
) -> Tensor:
    s = similarities(x)
    if not any(positives(y, a) for a in range(len(y))) or len(set(y)) < 2:
        return x.sum() * 0.0
    per_anchor = []
    for a in range(len(y)):
        ps, ns = ms_mined_pairs(s, y, a, epsilon)
        pos = log1p_sum_exp([-alpha * (s[a][p] - base) for p in ps], x) / alpha
        neg = log1p_sum_exp([beta * (s[a][n] - base) for n in ns], x) / beta
        per_anchor.append(pos + neg)
    return torch.stack(per_anchor).mean()


def supcon(x: Tensor, y: Sequence[int], temperature: float) -> Tensor:
    s = similarities(x)
    per_anchor = []
    for a in range(len(y)):
        ps, ns = positives(y, a), negatives(y, a)
        if not (ps and ns):
            continue
        denominator = sum(torch.exp(s[a][k] / temperature) for k in ps + ns)
        logs = [torch.log(torch.exp(s[a][p] / temperature) / denominator) for p in ps]
        per_anchor.append(-sum(logs) / len(ps))
    return mean(per_anchor, x)


def proxy_anchor(
    x: Tensor, y: Sequence[int], proxies: Tensor, margin: float, alpha: float
) -> Tensor:
    s = similarities(x, proxies)
    with_pos = [c for c in range(len(proxies)) if c in y]
    pos = sum(
        log1p_sum_exp([-alpha * (s[i][c] - margin) for i in range(len(y)) if y[i] == c], x)
        for c in with_pos
    )
    neg = sum(
        log1p_sum_exp([alpha * (s[i][c] + margin) for i in range(len(y)) if y[i] != c], x)
        for c in range(len(proxies))
    )
    return pos / max(len(with_pos), 1) + neg / len(proxies)


def margin_softmax(
    x: Tensor, y: Sequence[int], weight: Tensor, kind: str, margin: float, scale: float, k: int = 1
) -> Tensor:
    """ArcFace (cos(θ + m), or cos θ − m·sin m past π − m) / CosFace (cos θ − m)."""
    import math

    s = similarities(x, weight)
    terms = []
    for i in range(len(y)):
        cos = [max((s[i][c * k + j] for j in range(k)), key=val) for c in range(len(weight) // k)]
        c_y = cos[y[i]]
        if kind == "cosface":
            target = c_y - margin
        elif torch.acos(c_y.clamp(-1, 1)) <= math.pi - margin:
            target = torch.cos(torch.acos(c_y) + margin)
        else:
            target = c_y - margin * math.sin(margin)
        logits = [scale * (target if c == y[i] else cos[c]) for c in range(len(cos))]
        log_z = torch.log(sum(torch.exp(v) for v in logits))
        terms.append(log_z - logits[y[i]])
    return mean(terms, x)
