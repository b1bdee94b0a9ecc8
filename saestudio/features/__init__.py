"""Feature inspection: what did an SAE learn? (SPEC §G; ML core — no web, DB or queue.)

One streaming pass of one or more SAEs over an activation dataset's rows keeps, per
latent, with memory set by ``d_sae`` and never by the row count: firing density, mean
and max activation over firing rows, a log10-activation histogram, the top-N rows,
samples from activation-quantile bands, and (with an unembedding) the logit lens.

    from saestudio.features import inspect_sae, load_latents
    inspect_sae("runs/demo/sae", "acts/demo", "runs/demo/inspection", tokenizer=tok)
    for rec in load_latents("runs/demo/inspection"): ...

API
---
:func:`inspect_saes` ``(saes, activations, out, *, hook=None, rows=None, top_n=20,
window=8, bands=5, per_band=5, unembed=None, tokenizer=None, batch_size=4096,
progress=None, should_stop=None, device="cpu") -> dict[str, InspectSummary]``
    ``saes`` maps a folder name to a SAELens folder, a checkpoint / one-SAE run folder
    (:func:`run_saes` lists a run's SAEs) or an SAE module (put in eval mode and moved to
    ``device`` in place); SAE ``name`` is written to ``out/<name>/``. ``hook`` overrides the hook each SAE's ``cfg.json`` names (the
    input hook for transcoders); ``rows`` is a ``[start, stop)`` range (default: every
    row). ``unembed`` is ``W_U[d_model, vocab]`` (:func:`unembedding` of a causal LM;
    None for encoders: no ``logits`` then). ``tokenizer`` decodes token ids (without
    one, ``token``/``context`` are null). ``progress(rows_done, rows_total)`` after every
    batch; ``should_stop()`` before every batch — True raises :class:`InspectionStopped`
    and writes nothing. Bad input raises ``ValueError``/``DataError``/``FileNotFoundError``
    whose message starts with the field (``hook:``, ``rows:``, ``SAE:``, ``activations:``).
:func:`inspect_sae` ``(sae, activations, out, **same) -> InspectSummary``
    One SAE, written straight into ``out``.
:func:`load_summary` ``(dir) -> InspectSummary``; :func:`load_latents` ``(dir) -> Iterator[dict]``
    Read an inspection folder back (records one at a time, in latent order).
:func:`write_neuronpedia` ``(inspection_dir, out_dir, labels=None, ...) -> Path``
    Neuronpedia's upload layout (:mod:`.neuronpedia`); labels go out as explanations.

Output format (``saestudio.features/1``)
----------------------------------------
``summary.json`` — :class:`InspectSummary`: ``sae``, ``architecture``, ``d_in``,
``d_sae``, ``dataset``, ``model``, ``hook``, ``rows`` ``[start, stop)``, ``rows_read``,
``dead`` (never fired), ``dense`` (> 10 % of rows), ``dense_1pct`` (> 1 %), ``top_n``,
``window``, ``bands``, ``per_band``, ``logit_lens``, ``seconds``. Written last.

``latents.jsonl`` — one object per latent, in latent order:

- ``latent`` index; ``count`` firing rows; ``density`` = count / rows read (z > 0);
  ``mean_activation`` / ``max_activation`` over firing rows (0 for dead latents);
- ``histogram``: ``{"log10_edges": [...], "counts": [...]}`` of log10 activation over
  firing rows, 0.1-wide bins, trimmed to the first and last non-empty bin (values below
  1e-6 or above 1e4 are counted in the end bins); empty lists for dead latents;
- ``top``: up to ``top_n`` examples, highest activation first; ``quantiles``: ``bands``
  entries ``{"band", "low", "high", "examples"}`` (band 0 weakest; ``low``/``high`` are
  activation quantiles of the latent's firings, examples up to ``per_band`` sampled
  uniformly from the band, highest first). Each example is ``{"row", "activation",
  "token", "token_id", "context", "context_ids", "context_activations", "position"}``:
  ``row`` is the dataset row, ``token`` its decoded token, ``context`` the decoded tokens
  of the stored rows of the same packed context within ±``window`` positions (cut at the
  context's start and end; special tokens excluded at extraction are not stored and so
  not shown), ``context_activations`` the latent's activation on each, ``position`` the
  index of the row's own token in ``context`` — ``context[j]`` is row
  ``row − position + j``;
- ``logits`` (only with an unembedding): ``{"top": [...], "bottom": [...]}``, 10 each of
  ``{"token", "token_id", "value"}`` of ``W_dec[latent] @ W_U``.

Floats carry 6 significant digits.
"""

from saestudio.features.inspect import InspectionStopped, inspect_sae, inspect_saes
from saestudio.features.logit_lens import unembedding
from saestudio.features.neuronpedia import write_neuronpedia
from saestudio.features.records import FORMAT, InspectSummary, load_latents, load_summary
from saestudio.features.saes import LoadedSAE, load_for_inspection, run_saes

__all__ = [
    "FORMAT",
    "InspectSummary",
    "InspectionStopped",
    "LoadedSAE",
    "inspect_sae",
    "inspect_saes",
    "load_for_inspection",
    "load_latents",
    "load_summary",
    "run_saes",
    "unembedding",
    "write_neuronpedia",
]
