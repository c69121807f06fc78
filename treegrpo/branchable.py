"""Whether a stored tree node can be branched again, and why not: the one rule that the API's
node answers, the branch submission (409), the branch job and the tree inspector share.

Torch-free, so the API process imports it (pyproject.toml's import contracts).

    branch_refusal(is_leaf=False, has_latent=True)    # None: it can
    branch_refusal(is_leaf=False, has_latent=False)   # "has no stored latent: only branch ..."
"""

from __future__ import annotations


def branch_refusal(*, is_leaf: bool, has_latent: bool, latents_dropped: bool = False) -> str | None:
    """Why a stored node cannot be branched again, or None when it can: the one rule that the
    API's node answers, the branch submission, the branch job and the inspector share. The
    reason reads after the node's name ("node 7 has no stored latent: ...").

    Latents are kept only at branch points (a drawn node that is not a leaf: workers/recorder.py
    `branch_points`), and the operator's retention may drop an old tree's."""
    if is_leaf:
        return "is a leaf: it has no denoising steps left to branch"
    if has_latent:
        return None
    if latents_dropped:
        return (
            "has no stored latent: this tree's latents were dropped by retention (the operator "
            "keeps them for each job's newest trees only), so it can no longer be branched"
        )
    return (
        "has no stored latent: only branch points keep a latent (the drawn nodes that are not "
        "leaves), so it cannot be branched"
    )
