"""Synthetic 4D phantoms with exact ground truth at any continuous time.

There is no real data with frames between end-diastole/end-systole (or end-inhale/end-exhale)
to score an interpolator against, so these phantoms supply it: each frame is rendered
analytically, ``I_t(x) = ref(X_t(x))``, where ``ref`` is a reference anatomy made of soft-edged
shapes plus a smooth tissue texture, and ``X_t`` is an analytic *inverse* motion map (spatial
position at time ``t`` -> material position in the reference). Evaluating ``X_t`` at any real
phase gives the exact frame at that phase, no interpolation involved.

Conventions: arrays are ``(T, I, J, K)`` float32 in [0, 1]; axes 0 and 1 are in-plane (cardiac
short-axis plane; lung axial plane, L-R and A-P), axis 2 is the slice axis (cardiac long axis,
base at low ``k``, apex at high ``k``; lung inferior -> superior). Anatomy is defined in
millimetres over a fixed field of view per kind, so the same seed gives the same anatomy at any
voxel size (``spacing = FOV / size``). Phases are periodic with period 1.

Randomness follows the "draw parameters, then render deterministically" pattern: every random
number comes from ``np.random.default_rng(seed)`` in a params step, rendering is pure.
"""
