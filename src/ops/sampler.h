/* sampler.h: the CPU backend's next-token sampling (op_sample runs it per row; tests use it directly) from one row of logits: temperature, top-k, top-p (nucleus), greedy.
 *
 * Order of operations (as Hugging Face's logits processors): logits / temperature → softmax → keep the k most
 * likely (top_k > 0) → renormalise → keep the smallest most-likely-first set whose cumulative probability is
 * >= top_p (top_p < 1; always at least one token) → renormalise → draw. Candidates are ordered by probability
 * descending, ties by lower token id, so "the k best" and the nucleus are well defined under ties.
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
} sampler;

void sampler_init(sampler *s, int vocab);
void sampler_free(sampler *s);

/* Samples one token from logits [vocab]; writes its behaviour log-prob to *logprob (may be NULL).
 * Non-finite logits are a caller bug (dies). */
int32_t sampler_sample(sampler *s, const sampler_params *sp, const float *logits, uint64_t seq_id,
                       uint64_t position, float *logprob);

/* Fills probs[vocab] with the behaviour distribution (0 for filtered-out tokens; one-hot at the argmax for
 * greedy) and returns how many tokens survive the filters. For tests and diagnostics. */
int sampler_distribution(sampler *s, const sampler_params *sp, const float *logits, double *probs);

/* Uniform in [0, 1) with 53 random bits from Philox block (seed, seq_id, position). */
double sampler_uniform(uint64_t seed, uint64_t seq_id, uint64_t position);
