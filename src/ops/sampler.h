/* sampler.h: the CPU backend's next-token sampling (op_sample runs it per row; tests use it directly) from one row of logits: temperature, top-k, top-p (nucleus), greedy.
 *
 * Order of operations (as Hugging Face's logits processors): logits / temperature → softmax → keep the k most
 * likely (top_k > 0) → renormalise → keep the smallest most-likely-first set whose cumulative probability is
 * >= top_p (top_p < 1; always at least one token) → renormalise → draw. Candidates are ordered by probability
 * descending, ties by lower token id, so "the k best" and the nucleus are well defined under ties. Weights
 * w = exp(logit / T - max) come from sampler_exp's arithmetic (a vectorised pass, the same bits on every
 * machine and on the CUDA backend); tokens whose weight underflows to 0 are never candidates.
 *
 * The pick, in fp64: the nucleus is the shortest best-first prefix whose cumulative weight reaches top_p times
 * the mass (z, or the top-k set's); the draw is the first candidate, best first, whose cumulative weight exceeds
 * u times the kept mass (without any filter, the first in id order). Top-p alone never sorts the vocabulary: a
 * histogram of weight mass over the weights' top bits finds the bins where those two positions fall, and only
 * the members of those bins are gathered and sorted. Its sums run bin by bin, so it can differ from one long
 * sequential sum only where a target lies within rounding (~1e-16 relative) of a cumulative boundary.
 *
 * The draw is an inverse-CDF lookup with u from the Philox counter RNG keyed by (seed, stream = sequence id,
 * counter = position of the token being sampled), so a sample depends only on the logits and those three
 * numbers: never on batch composition, slot, or thread count.
 *
 * The returned log-prob is under the BEHAVIOUR distribution, the one actually sampled from: after temperature
 * AND after top-k / top-p filtering and renormalisation (so it is 0 when only one token survives). With
 * temperature 0 (greedy: argmax, ties → lowest id) the behaviour distribution is a point mass; the returned
 * log-prob is then the model's own log-softmax (temperature 1, unfiltered) of the chosen token, which is the
 * useful number for scoring greedy outputs. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "ops/ops.h"

/* The parameters are ops.h's ops_sampling (temperature 0 = greedy, top_k 0 = off, top_p 1 = off, seed). */
typedef ops_sampling sampler_params;

/* Checks ranges (temperature >= 0 and finite, top_k >= 0, 0 < top_p <= 1); false + err naming the field. */
bool sampler_params_check(const sampler_params *sp, s2d_err *err);

/* Scratch for one row of a vocabulary of `vocab` tokens (allocated once; one per concurrently sampled row). */
typedef struct {
    int vocab;
    float *scaled;  /* [vocab] logits / temperature */
    struct sampler_cand {
        float p;    /* probability after temperature (unnormalised within the candidate set) */
        int32_t id;
    } *cand;        /* [vocab] candidate set */
    struct sampler_cand *cand_tmp; /* [vocab] scratch of the candidates' radix sort */
    double *bin_mass;  /* [SAMPLER_BINS] top-p: weight mass per bin of the weights' top bits */
    int nuc_bin, nuc_n; /* top-p: the nucleus is every bin above nuc_bin and the first nuc_n of cand */
} sampler;

/* Top-p bins: a weight in [0, 1] falls in bin (IEEE bits >> 19), at most 0x7F0 for 1.0. */
#define SAMPLER_BINS 2048

void sampler_init(sampler *s, int vocab);
void sampler_free(sampler *s);

/* Samples one token from logits [vocab]; writes its behaviour log-prob to *logprob (may be NULL).
 * Non-finite logits are a caller bug (dies). */
int32_t sampler_sample(sampler *s, const sampler_params *sp, const float *logits, uint64_t seq_id,
                       uint64_t position, float *logprob);

/* Fills probs[vocab] with the behaviour distribution (0 for filtered-out tokens; one-hot at the argmax for
 * greedy) and returns how many tokens survive the filters. For tests and diagnostics. */
int sampler_distribution(sampler *s, const sampler_params *sp, const float *logits, double *probs);

/* exp(x) for x <= 88 (below -110: 0) by the arithmetic of the sampler's vectorised weights
 * pass, one value at a time: within ~2 ulp of exp(), the same bits on every machine. */
float sampler_exp(float x);

/* Uniform in [0, 1) with 53 random bits from Philox block (seed, seq_id, position). */
double sampler_uniform(uint64_t seed, uint64_t seq_id, uint64_t position);
