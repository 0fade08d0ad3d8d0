"""Compiled inner loops of the analysis (numba, compiled on first use: see :mod:`midid.compiled`).

The analysis is numpy over whole files, but some steps are loops by nature - the chord Viterbi
(one step per beat), the tempo score (hundreds of gathers per candidate) - and for a short
file the cost is the number of numpy calls, not arithmetic. These kernels do such steps in one
call each.
"""

from __future__ import annotations

import numpy as np

from ..compiled import compiled_on_first_call


@compiled_on_first_call
def note_columns(
    time: np.ndarray, duration: np.ndarray, pitch: np.ndarray, velocity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """symusic's note columns as the analysis holds them - start and end ticks in int64 (a
    negative duration counts as 0), pitch and velocity in int16 - and the earliest start:
    one pass instead of six numpy calls, which cost more than symusic's parse of a loop."""
    n = time.size
    start = np.empty(n, dtype=np.int64)
    end = np.empty(n, dtype=np.int64)
    pitch16 = np.empty(n, dtype=np.int16)
    velocity16 = np.empty(n, dtype=np.int16)
    earliest = 0
    for i in range(n):
        at = np.int64(time[i])
        start[i] = at
        end[i] = at + max(np.int64(duration[i]), 0)
        pitch16[i] = pitch[i]
        velocity16[i] = velocity[i]
        earliest = min(earliest, at)
    return start, end, pitch16, velocity16, earliest


@compiled_on_first_call
def tidy_tempo_map(ticks: np.ndarray, mspq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The set-tempo events with a positive tempo, in tick order (stable), the last one at
    each tick: what a player applies."""
    keep = np.flatnonzero(mspq > 0)
    order = keep[np.argsort(ticks[keep], kind="mergesort")]
    last = np.empty(order.size, dtype=np.bool_)
    for i in range(order.size):
        last[i] = i == order.size - 1 or ticks[order[i + 1]] != ticks[order[i]]
    chosen = order[last]
    return ticks[chosen], mspq[chosen]


@compiled_on_first_call
def beat_grid(
    start: np.ndarray, end: np.ndarray, tpq: int, bins: int, grid_preference: float,
    max_segments: int, max_pairs: int,
) -> tuple[int, int, int, int]:
    """(phase, shift, step, segments) of the chord grid, see :func:`.chords.beat_grid`.

    ``phase`` (0..tpq-1 ticks) is where onsets modulo a quarter note gather most, each onset
    weighted by its note's length: the peak of a ``bins``-bin histogram (smoothed over
    neighbouring bins), refined to the weighted mean of the onsets within a bin and a half of
    it; 0 when the histogram at the tick grid's own beat reaches ``grid_preference`` times the
    peak. ``shift`` = ticks added to every note so beats fall on multiples of ``step``;
    ``step`` is tpq unless more than ``max_segments`` segments or ``max_pairs`` (note, segment)
    overlaps would be needed."""
    histogram = np.zeros(bins)
    last, held = 0, 0
    for i in range(start.size):
        length = max(end[i] - start[i], 1)
        nearest = ((start[i] % tpq) * bins + tpq // 2) // tpq  # 0..bins, bins wraps to 0
        histogram[nearest if nearest < bins else 0] += length
        last = max(last, end[i])
        held += length
    peak, peak_weight, at_grid = 0, -1.0, 0.0
    for b in range(bins):
        smooth = histogram[b - 1] + 2.0 * histogram[b] + histogram[(b + 1) % bins]
        if b == 0:
            at_grid = smooth
        if smooth > peak_weight:
            peak, peak_weight = b, smooth
    phase = 0
    if at_grid < grid_preference * peak_weight:
        centre = peak * tpq / bins
        reach = 1.5 * tpq / bins
        total, weight = 0.0, 0.0
        for i in range(start.size):
            offset = start[i] % tpq - centre  # wrapped into -tpq/2..tpq/2 without a float %
            if offset > tpq / 2:
                offset -= tpq
            elif offset < -tpq / 2:
                offset += tpq
            if -reach <= offset <= reach:
                length = max(end[i] - start[i], 1)
                total += offset * length
                weight += length
        phase = np.int64(round(centre + total / weight)) % tpq
    shift = (tpq - phase) % tpq
    last += shift
    step = tpq
    if -(-last // step) > max_segments:
        step = -(-last // max_segments)
    # A note overlaps at most held / step + 2 segments: count exactly only near the limit.
    while held // step + 2 * start.size > max_pairs:
        pairs = 0
        for i in range(start.size):
            s = start[i] + shift
            pairs += (max(end[i] + shift - 1, s)) // step - s // step + 1
        if pairs <= max_pairs:
            break
        step *= 2
    return phase, shift, step, max(1, -(-last // step))


@compiled_on_first_call
def chord_path(
    start: np.ndarray,
    end: np.ndarray,
    pitch: np.ndarray,
    voice: np.ndarray,
    shift: int,
    step: int,
    n_seg: int,
    intervals: np.ndarray,
    root_weight: float,
    scale: np.ndarray,
    bias: np.ndarray,
    low_register_weight: float,
    chordal_notes: float,
    strong_change: float,
    weak_change: float,
    near_beat: float,
    meter_margin: float,
    tpq: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Runs of the best chord path, see :mod:`.chords`: the beat each run starts on (quarter
    notes from the file start, to 0.001) and its chord index (quality x 12 + root, -1 where
    no counted voice sounds).

    Times in ticks, ``shift`` added to every note, ``step`` ticks per segment; ``voice[i]``
    (0-based) is note i's voice. When some voice sounds ``chordal_notes`` notes or more
    on average over the segments it sounds in, only such voices and the lowest voice (by mean
    pitch) count. Each segment's chroma (overlap in ticks, weighted by register) is square
    rooted and z-scored. Quality q's template is 1 on the semitones ``intervals[q]`` above the
    root (-1 padded, root first) plus ``root_weight`` on the root, z-scored: since a z-scored
    chroma sums to zero, its correlation with the template is the template's sum over the
    chroma's z-scores times ``scale[q]``. Viterbi with one cost per change: the best
    predecessor of a chord is itself or the previous segment's best chord; a change costs
    ``weak_change`` on every other segment - the parity where onsets within ``near_beat`` of
    a segment start hold less note length, by a factor 1 + ``meter_margin`` at least - and
    ``strong_change`` elsewhere (everywhere when neither parity holds clearly less).
    """
    n_qual = intervals.shape[0]
    n_chords = n_qual * 12
    n_voices = 1
    for i in range(voice.size):
        n_voices = max(n_voices, voice[i] + 1)
    counted = np.ones(n_voices, dtype=np.bool_)
    if n_voices > 1:
        touched = np.zeros((n_voices, n_seg), dtype=np.bool_)
        note_time = np.zeros(n_voices)
        segments = np.zeros(n_voices)
        pitch_sum = np.zeros(n_voices)
        notes = np.zeros(n_voices)
        for i in range(start.size):
            v, s, e = voice[i], start[i] + shift, end[i] + shift
            note_time[v] += max(e - s, 1)
            pitch_sum[v] += pitch[i]
            notes[v] += 1.0
            for seg in range(min(s // step, n_seg - 1), min(max(e - 1, s) // step, n_seg - 1) + 1):
                if not touched[v, seg]:
                    touched[v, seg] = True
                    segments[v] += 1.0
        lowest, chordal = -1, False
        for v in range(n_voices):
            if notes[v] > 0:
                counted[v] = note_time[v] >= chordal_notes * segments[v] * step
                chordal = chordal or counted[v]
                if lowest < 0 or pitch_sum[v] * notes[lowest] < pitch_sum[lowest] * notes[v]:
                    lowest = v
        if chordal:
            counted[lowest] = True
        else:
            counted[:] = True
    chroma = np.zeros((n_seg, 12))
    on_beat = np.zeros(2)
    for i in range(start.size):
        s, e, p = start[i] + shift, end[i] + shift, pitch[i]
        nearest = (s + step // 2) // step
        if abs(s - nearest * step) < near_beat * step:
            on_beat[nearest % 2] += max(e - s, 1)
        if not counted[voice[i]]:
            continue
        weight = 1.0 + low_register_weight * max(72 - p, 0) / 12.0
        s0 = min(s // step, n_seg - 1)
        s1 = min(max(e - 1, s) // step, n_seg - 1)
        for seg in range(s0, s1 + 1):
            overlap = min(e, (seg + 1) * step) - max(s, seg * step)
            if overlap > 0:
                chroma[seg, p % 12] += overlap * weight
    # The weak beats' parity; -1 when neither parity holds clearly more (no meter to go by).
    weak = -1
    for parity in range(2):
        if on_beat[1 - parity] > (1.0 + meter_margin) * on_beat[parity]:
            weak = parity
    delta = np.zeros(n_chords)
    keep = np.empty((n_seg, n_chords), dtype=np.bool_)
    top = np.zeros(n_seg, dtype=np.int64)
    sounding = np.zeros(n_seg, dtype=np.bool_)
    z = np.empty(12)
    # Segments go in blocks, chord by chord over a block's segments (long loops that compile
    # to vector instructions); each score is the same sum, term by term, as one at a time.
    block = 64
    zt = np.empty((24, block))  # the z-scored chroma of the block's segments, twice over
    scores = np.empty((n_chords, block))
    best = 0
    for t0 in range(0, n_seg, block):
        width = min(block, n_seg - t0)
        for u in range(width):
            t = t0 + u
            for j in range(12):
                z[j] = np.sqrt(chroma[t, j]) if chroma[t, j] > 0 else 0.0
            mean = 0.0
            for j in range(12):
                mean += z[j]
            mean /= 12.0
            var = 0.0
            for j in range(12):
                z[j] -= mean
                var += z[j] * z[j]
            sounding[t] = mean > 0
            std = np.sqrt(var / 12.0)
            inv = 1.0 / std if std > 0 else 0.0
            for j in range(12):
                zt[j, u] = z[j] * inv
                zt[j + 12, u] = zt[j, u]
        for q in range(n_qual):
            for root in range(12):
                row = scores[q * 12 + root]
                for u in range(width):
                    row[u] = root_weight * zt[root, u]
                for k in range(intervals.shape[1]):
                    iv = intervals[q, k]
                    if iv >= 0:
                        tone = zt[root + iv]
                        for u in range(width):
                            row[u] += tone[u]
                for u in range(width):
                    row[u] = row[u] * scale[q] + bias[q]
        for u in range(width):
            t = t0 + u
            # One pass: take the best predecessor (itself, or last segment's best chord at a
            # cost), add this segment's score, and find this segment's best chord.
            change = weak_change if t % 2 == weak else strong_change
            switch = delta[best] - change if t > 0 else 0.0
            top[t] = best
            new_best, best_value = 0, -np.inf
            for c in range(n_chords):
                kept = delta[c] >= switch
                keep[t, c] = kept
                value = (delta[c] if kept else switch) + scores[c, u]
                delta[c] = value
                if value > best_value:
                    new_best, best_value = c, value
            best = new_best
    path = np.empty(n_seg, dtype=np.int64)
    path[n_seg - 1] = best
    for t in range(n_seg - 1, 0, -1):
        path[t - 1] = path[t] if keep[t, path[t]] else top[t]
    runs = 0
    for t in range(n_seg):
        if not sounding[t]:
            path[t] = -1
        if t == 0 or path[t] != path[t - 1]:
            runs += 1
    beat = np.empty(runs)
    chord = np.empty(runs, dtype=np.int64)
    r = 0
    for t in range(n_seg):
        if t == 0 or path[t] != path[t - 1]:
            beat[r] = np.round(max(t * step - shift, 0) / tpq * 1000.0) / 1000.0
            chord[r] = path[t]
            r += 1
    return beat, chord


@compiled_on_first_call
def onset_envelopes(
    onset_s: np.ndarray, weight: np.ndarray, role: np.ndarray, frame_rate: float,
    max_frames: int, n_roles: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onset-strength envelopes (n_roles, frames), each row's total weight and its number
    of frames with an onset; see :func:`.tempo.features`.

    Row 0 sums every onset, row r + 1 the onsets of role r (-1: no row of its own); onsets
    from ``max_frames`` frames on are left out."""
    n = 1
    for i in range(onset_s.size):
        f = np.int64(onset_s[i] * frame_rate + 0.5)
        if 0 <= f < max_frames and f + 1 > n:
            n = f + 1
    env = np.zeros((n_roles, n))
    for i in range(onset_s.size):
        f = np.int64(onset_s[i] * frame_rate + 0.5)
        if 0 <= f < max_frames:
            env[0, f] += weight[i]
            if role[i] >= 0:
                env[role[i] + 1, f] += weight[i]
    total = np.zeros(n_roles)
    frames = np.zeros(n_roles, dtype=np.int64)
    for f in range(n):  # rows side by side: four sums in flight, not one long chain
        for r in range(n_roles):
            total[r] += env[r, f]
            if env[r, f] != 0:
                frames[r] += 1
    return env, total, frames


@compiled_on_first_call
def envelope_acf(
    env: np.ndarray, total: np.ndarray, n_lags: int, smooth_acf: np.ndarray
) -> np.ndarray:
    """(rows, n_lags) linear autocorrelation (lag 0 first) of each envelope row with its mean
    removed and then convolved with a short smoothing kernel whose own autocorrelation is
    ``smooth_acf`` (odd length, centred): what irfft(|rfft(smoothed row)|^2) gives, but from
    the frames that hold onsets (a few per beat), so it costs pairs of onsets within
    ``n_lags`` frames instead of two FFTs. The mean enters through prefix sums:
    sum (e_t - m)(e_t+k - m) = sum e_t e_t+k - m (sum of the two overlapping stretches)
    + (frames - k) m^2."""
    n_rows, size = env.shape
    half = (smooth_acf.size - 1) // 2
    need = n_lags + half
    out = np.zeros((n_rows, n_lags))
    acf = np.zeros(need)
    prefix = np.zeros((n_rows, size + 1))
    onsets = np.empty((n_rows, size), dtype=np.int64)
    counts = np.zeros(n_rows, dtype=np.int64)
    for t in range(size):  # rows side by side: the prefix sums are not one long chain
        for r in range(n_rows):
            prefix[r, t + 1] = prefix[r, t] + env[r, t]
            if env[r, t] != 0:
                onsets[r, counts[r]] = t
                counts[r] += 1
    for r in range(n_rows):
        count = counts[r]
        acf[:] = 0.0
        for a in range(count):
            i = onsets[r, a]
            for b in range(a, count):
                k = onsets[r, b] - i
                if k >= need:
                    break
                acf[k] += env[r, i] * env[r, onsets[r, b]]
        mean = total[r] / size
        for k in range(min(need, size)):
            acf[k] += (size - k) * mean * mean - mean * (
                total[r] - prefix[r, k] + prefix[r, size - k])
        for k in range(n_lags):
            value = 0.0
            for d in range(-half, half + 1):
                value += smooth_acf[d + half] * acf[abs(k - d)]
            out[r, k] = value
    return out


@compiled_on_first_call
def tempo_features(
    acf: np.ndarray,
    spec: np.ndarray,
    env_total: np.ndarray,
    onset_frames: np.ndarray,
    size: int,
    fft_size: int,
    gather: np.ndarray,
    frac: np.ndarray,
    inside: np.ndarray,
    bin_per_n: np.ndarray,
    cross_cols: np.ndarray,
    candidates: np.ndarray,
    prior: np.ndarray,
    frame_rate: float,
    weights: np.ndarray,
    keep_features: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The (candidates, features) matrix of :func:`.tempo.features`, and its product with
    ``weights`` (the score of each candidate), from the raw
    autocorrelation (roles x lags, lag 0 first) and spectrum (roles x bins) of envelopes of
    ``size`` frames, zero-padded to ``fft_size``. Without ``keep_features`` the matrix is one
    scratch row (only the fit reads the features; the estimate needs the score alone)."""
    n_roles, n_lags = acf.shape
    norm = np.empty((n_roles, n_lags))
    for r in range(n_roles):
        for k in range(n_lags):
            norm[r, k] = acf[r, k] / max(size - k, size / 4.0)
        zero = max(norm[r, 0], 1e-12)
        for k in range(n_lags):
            norm[r, k] /= zero
    flat = norm.ravel()
    n_cand, n_read = gather.shape
    n_rates = bin_per_n.shape[1]
    n_cross = cross_cols.size
    n_feat = n_read + n_roles * n_rates + n_cross + 2 * n_roles + prior.shape[1]
    out = np.empty((n_cand if keep_features else 1, n_feat))
    last_bin = spec.shape[1] - 1
    # |spectrum| / total weight once per bin (many candidates share a bin), with sqrt rather
    # than abs(): abs of a complex is hypot, several times slower.
    mag = np.empty((n_roles, spec.shape[1]))
    for r in range(n_roles):
        for b in range(spec.shape[1]):
            mag[r, b] = np.sqrt(spec[r, b].real ** 2 + spec[r, b].imag ** 2) / env_total[r]
    score = np.empty(n_cand)
    bins = np.empty(n_rates, dtype=np.int64)
    # log2(onsets per beat) = log2(onsets per frame x frames per minute) - log2(bpm): one log
    # per role and one per candidate instead of one per pair.
    log_rate = np.empty(n_roles)
    for r in range(n_roles):
        log_rate[r] = np.log2(60.0 * frame_rate / size * max(onset_frames[r], 0.5))
    for c in range(n_cand):
        row = c if keep_features else 0
        log_bpm = np.log2(candidates[c])
        # The score is summed as each feature is written, in column order (the same sum as
        # a row of ``out @ weights`` taken left to right, without reading ``out`` again).
        total = 0.0
        col = 0
        for j in range(n_read):
            g = gather[c, j]
            value = (flat[g] * (1.0 - frac[c, j]) + flat[g + 1] * frac[c, j]) * inside[c, j]
            out[row, col] = value
            total += value * weights[col]
            col += 1
        for q in range(n_rates):  # every role reads the same bins
            bins[q] = min(np.int64(bin_per_n[c, q] * fft_size + 0.5), last_bin)
        for r in range(n_roles):
            for q in range(n_rates):
                value = mag[r, bins[q]]
                out[row, col] = value
                total += value * weights[col]
                col += 1
        for q in range(n_cross):
            b = bins[cross_cols[q]]
            low, back = spec[1, b], spec[2, b]
            both = mag[1, b] * mag[2, b] * env_total[1] * env_total[2]
            dot = low.real * back.real + low.imag * back.imag
            value = dot / both if both > 0 else 0.0
            out[row, col] = value
            total += value * weights[col]
            col += 1
        for r in range(n_roles):
            per_beat = log_rate[r] - log_bpm
            square = per_beat * per_beat
            out[row, col] = per_beat
            out[row, col + 1] = square
            total += per_beat * weights[col]
            total += square * weights[col + 1]
            col += 2
        for j in range(prior.shape[1]):
            out[row, col] = prior[c, j]
            total += prior[c, j] * weights[col]
            col += 1
        score[c] = total
    return out, score


@compiled_on_first_call
def grid_onsets(
    start: np.ndarray, onset_s: np.ndarray, tpq: int, frame_rate: float, max_frames: int
) -> tuple[int, int]:
    """(notes whose onset lies within tpq/96 of a 16th or a 16th-triplet of the quarter
    note, distinct onset frames in the first ``max_frames``), see :func:`.tempo.estimate_bpm`.
    ``start`` in ticks, ``onset_s`` the same onsets in seconds."""
    on_grid = 0
    for i in range(start.size):
        pos = start[i] % tpq
        for k in (4, 6):  # distance to the nearest multiple of tpq / k, times k * 96
            r = pos * k % tpq
            if min(r, tpq - r) * 96 <= k * tpq:
                on_grid += 1
                break
    seen = np.zeros(max_frames, dtype=np.bool_)
    frames = 0
    for i in range(onset_s.size):
        f = np.int64(onset_s[i] * frame_rate + 0.5)
        if 0 <= f < max_frames and not seen[f]:
            seen[f] = True
            frames += 1
    return on_grid, frames


@compiled_on_first_call
def note_summary(
    start: np.ndarray,
    end: np.ndarray,
    pitch: np.ndarray,
    voice: np.ndarray,
    drum: np.ndarray,
    n_voices: int,
    part_of_pitch: np.ndarray,
    order: np.ndarray,
) -> tuple:
    """Note statistics of a file in one pass (times in ticks; notes in any order):

    (first onset, last note-off, lowest pitch, highest pitch, drum hits per kit part
    (``part_of_pitch`` maps a pitch to its part), notes per voice, pitched notes per voice,
    polyphony of all notes, polyphony of pitched notes, share of pitched onset times where 3+
    notes start together, median pitched pitch (-1 without pitched notes)).

    Polyphony is the mean number of notes sounding while any sounds: total note time over
    the length of the union of the notes (1.0 for notes of no length, 0.0 for no notes).
    ``order`` is the stable sort of ``start`` when the caller has it (numpy's sort is much
    faster on notes that come track after track), else empty: then it is made here.
    """
    n = start.size
    first, last, low, high = 0, 0, 127, 0
    parts = np.zeros(part_of_pitch.max() + 1, dtype=np.int64)
    per_voice = np.zeros(n_voices, dtype=np.int64)
    pitched_per_voice = np.zeros(n_voices, dtype=np.int64)
    histogram = np.zeros(128, dtype=np.int64)
    ordered = True
    for i in range(n):
        if i == 0 or start[i] < first:
            first = start[i]
        last = max(last, end[i])
        low = min(low, pitch[i])
        high = max(high, pitch[i])
        per_voice[voice[i]] += 1
        if drum[i]:
            parts[part_of_pitch[pitch[i]]] += 1
        else:
            pitched_per_voice[voice[i]] += 1
            histogram[pitch[i]] += 1
        if i > 0 and start[i] < start[i - 1]:
            ordered = False
    if order.size != n:
        order = np.arange(n) if ordered else np.argsort(start, kind="mergesort")
    polyphony = np.zeros(2)
    for pitched_only in range(2):
        total, silent, reach, begin, seen = 0.0, 0.0, 0, 0, False
        for i in order:
            if pitched_only and drum[i]:
                continue
            if not seen:
                begin, reach, seen = start[i], start[i], True
            silent += max(start[i] - reach, 0)
            reach = max(reach, end[i])
            total += end[i] - start[i]
        busy = reach - begin - silent
        polyphony[pitched_only] = total / busy if busy > 0 else (1.0 if seen else 0.0)
    onset_times, chord_times, run, previous = 0, 0, 0, -1
    for i in order:
        if drum[i]:
            continue
        if run > 0 and start[i] == previous:
            run += 1
        else:
            if run >= 3:
                chord_times += 1
            onset_times += 1
            run, previous = 1, start[i]
    if run >= 3:
        chord_times += 1
    chord_share = chord_times / onset_times if onset_times else 0.0
    pitched = histogram.sum()
    median = -1.0
    if pitched:
        cumulative = np.cumsum(histogram)
        lower = np.searchsorted(cumulative, (pitched - 1) // 2 + 1)
        upper = np.searchsorted(cumulative, pitched // 2 + 1)
        median = (lower + upper) / 2.0
    return (first, last, low, high, parts, per_voice, pitched_per_voice, polyphony[0],
            polyphony[1], chord_share, median)


@compiled_on_first_call
def key_profiles(
    pitch: np.ndarray, duration_q: np.ndarray, chord_roots: np.ndarray, bass_pitch: int
) -> np.ndarray:
    """The key finder's four profiles as one 48-vector, see :func:`.key.key_features`:
    sounding time per pitch class, the same for pitches below ``bass_pitch``, and the two
    rows of ``chord_roots``; each normalised to sum 1 (left at 0 when empty)."""
    out = np.zeros(48)
    for i in range(pitch.size):
        pc = pitch[i] % 12
        out[pc] += duration_q[i]
        if pitch[i] < bass_pitch:
            out[12 + pc] += duration_q[i]
    for row in range(2):
        for pc in range(12):
            out[24 + 12 * row + pc] = chord_roots[row, pc]
    for block in range(4):
        total = 0.0
        for j in range(12):
            total += out[12 * block + j]
        if total > 0:
            for j in range(12):
                out[12 * block + j] /= total
    return out
