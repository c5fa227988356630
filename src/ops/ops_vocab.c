/* ops_vocab.c: the CPU backend's vocabulary-wide row functions (forward KL full / top-k + tail, opd's exact
 * per-position reverse KL full / top-k + tail, the teacher's top-k and full log-softmax) and op_vocab_rows, which applies one of them (or the log-softmax gather of the
 * sampled token) to each row of a chunk of LM-head logits. Sums run in double in a fixed order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "ops/ops_cpu.h"

/* log Σ exp(x) over a row, in double. */
static double logsumexp_row(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

void cpu_log_softmax_row(const float *logits, int V, float *logp) {
    double lse = logsumexp_row(logits, V);
    for (int v = 0; v < V; v++) logp[v] = (float)(logits[v] - lse);
}

double cpu_fkl_full_row(const float *teacher_logp, const float *logits, int V, float scale, float *dlogits) {
    double lse = logsumexp_row(logits, V), kl = 0;
    for (int v = 0; v < V; v++) {
        double lp = logits[v] - lse, pt = exp((double)teacher_logp[v]);
        if (pt > 0) kl += pt * (teacher_logp[v] - lp);
        dlogits[v] = (float)(scale * (exp(lp) - pt));
    }
    return kl;
}

static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

enum { FKL_MAX_TOPK = 4096 };

double cpu_fkl_topk_row(const int32_t *topk_ids, const float *topk_logp, int k, const float *logits, int V,
                    float scale, float *dlogits) {
    CHECK(k >= 1 && k <= FKL_MAX_TOPK && k <= V, "cpu_fkl_topk_row: k = %d outside [1, min(%d, V=%d)]", k,
          FKL_MAX_TOPK, V);
    int32_t sorted[FKL_MAX_TOPK];
    memcpy(sorted, topk_ids, sizeof(int32_t) * (size_t)k);
    qsort(sorted, (size_t)k, sizeof(int32_t), cmp_int32);
    for (int i = 0; i < k; i++) {
        CHECK(sorted[i] >= 0 && sorted[i] < V, "cpu_fkl_topk_row: teacher id %d outside the vocabulary (%d)", sorted[i], V);
        CHECK(i == 0 || sorted[i] != sorted[i - 1], "cpu_fkl_topk_row: teacher id %d appears twice in the top-k", sorted[i]);
    }
    double lse = logsumexp_row(logits, V);
    /* Student tail mass mθ = Σ_{v∉K} pθ(v), as a log-sum-exp over the tail itself (no 1 − Σ cancellation). */
    float mx = -INFINITY;
    for (int v = 0, j = 0; v < V; v++) {
        if (j < k && sorted[j] == v) { j++; continue; }
        mx = logits[v] > mx ? logits[v] : mx;
    }
    double tail_sum = 0;
    for (int v = 0, j = 0; v < V; v++) {
        if (j < k && sorted[j] == v) { j++; continue; }
        tail_sum += exp((double)logits[v] - mx);
    }
    double lse_tail = k < V ? mx + log(tail_sum) : -INFINITY; /* log Σ_{v∉K} e^z */
    double teacher_in_k = 0, kl = 0;
    for (int i = 0; i < k; i++) {
        double pt = exp((double)topk_logp[i]);
        teacher_in_k += pt;
        if (pt > 0) kl += pt * (topk_logp[i] - (logits[topk_ids[i]] - lse));
    }
    double m_teacher = 1 - teacher_in_k;
    /* An empty tail (k = V) has no mass; below 1e-6 the remainder is float rounding of the teacher's sum. */
    if (k == V || m_teacher < 1e-6) m_teacher = 0;
    if (m_teacher > 0) kl += m_teacher * (log(m_teacher) - (lse_tail - lse));
    /* Off K: pθ(v)(1 − m_T/mθ) = pθ(v) − m_T·e^(z_v − lse_tail); on K: pθ(v) − p_T(v). */
    for (int v = 0, j = 0; v < V; v++) {
        double p = exp(logits[v] - lse);
        if (j < k && sorted[j] == v) {
            j++;
            dlogits[v] = (float)(scale * p); /* p_T subtracted below */
        } else {
            double share = m_teacher > 0 ? m_teacher * exp(logits[v] - lse_tail) : 0.0;
            dlogits[v] = (float)(scale * (p - share));
        }
    }
    for (int i = 0; i < k; i++) dlogits[topk_ids[i]] -= (float)(scale * exp((double)topk_logp[i]));
    return kl;
}

double cpu_rkl_full_row(const float *teacher_logp, const float *logits, int V, float lambda, float scale, float dl,
                        int32_t target, float *dlogits) {
    double lse = logsumexp_row(logits, V), loss = 0, kl = 0;
    for (int v = 0; v < V; v++) {
        double lp = logits[v] - lse, p = exp(lp);
        loss += p * (lp - (double)lambda * teacher_logp[v]);
        kl += p * (lp - teacher_logp[v]);
    }
    for (int v = 0; v < V; v++) { /* reads logits[v] before writing dlogits[v]: in place is fine */
        double lp = logits[v] - lse, p = exp(lp);
        double g = scale * p * (lp - (double)lambda * teacher_logp[v] - loss) - (double)dl * p;
        dlogits[v] = (float)(g + (v == target ? dl : 0.0));
    }
    return kl;
}

typedef struct {
    int32_t id;
    float logp;
} id_logp;

static int cmp_id_logp(const void *a, const void *b) {
    int32_t x = ((const id_logp *)a)->id, y = ((const id_logp *)b)->id;
    return (x > y) - (x < y);
}

double cpu_rkl_topk_row(const int32_t *topk_ids, const float *topk_logp, int k, const float *logits, int V,
                        float lambda, float scale, float dl, int32_t target, float *dlogits) {
    CHECK(k >= 1 && k <= FKL_MAX_TOPK && k <= V, "cpu_rkl_topk_row: k = %d outside [1, min(%d, V=%d)]", k,
          FKL_MAX_TOPK, V);
    id_logp sorted[FKL_MAX_TOPK];
    for (int i = 0; i < k; i++) sorted[i] = (id_logp){topk_ids[i], topk_logp[i]};
    qsort(sorted, (size_t)k, sizeof *sorted, cmp_id_logp);
    for (int i = 0; i < k; i++) {
        CHECK(sorted[i].id >= 0 && sorted[i].id < V, "cpu_rkl_topk_row: teacher id %d outside the vocabulary (%d)",
              sorted[i].id, V);
        CHECK(i == 0 || sorted[i].id != sorted[i - 1].id, "cpu_rkl_topk_row: teacher id %d appears twice in the top-k",
              sorted[i].id);
    }
    double lse = logsumexp_row(logits, V);
    /* the student's tail mass as a log-sum-exp over the tail itself (no 1 − Σ cancellation) */
    float mx = -INFINITY;
    for (int v = 0, j = 0; v < V; v++) {
        if (j < k && sorted[j].id == v) { j++; continue; }
        mx = logits[v] > mx ? logits[v] : mx;
    }
    double tail_sum = 0;
    for (int v = 0, j = 0; v < V; v++) {
        if (j < k && sorted[j].id == v) { j++; continue; }
        tail_sum += exp((double)logits[v] - mx);
    }
    bool has_tail = k < V;
    double log_tail = has_tail ? mx + log(tail_sum) - lse : -INFINITY; /* log mθ */
    double teacher_in_k = 0;
    for (int i = 0; i < k; i++) teacher_in_k += exp((double)sorted[i].logp);
    double log_tail_teacher = has_tail ? log(fmax(1 - teacher_in_k, 1e-6)) : 0; /* log m_T */
    double loss = 0, kl = 0;
    for (int i = 0; i < k; i++) {
        double lp = logits[sorted[i].id] - lse, p = exp(lp);
        loss += p * (lp - (double)lambda * sorted[i].logp);
        kl += p * (lp - sorted[i].logp);
    }
    double a_tail = has_tail ? log_tail - (double)lambda * log_tail_teacher : 0;
    if (has_tail) {
        double m = exp(log_tail);
        loss += m * a_tail;
        kl += m * (log_tail - log_tail_teacher);
    }
    for (int v = 0, j = 0; v < V; v++) { /* each v reads only its own logit: in place is fine */
        double lp = logits[v] - lse, p = exp(lp), a;
        if (j < k && sorted[j].id == v) a = lp - (double)lambda * sorted[j++].logp;
        else a = a_tail;
        double g = scale * p * (a - loss) - (double)dl * p;
        dlogits[v] = (float)(g + (v == target ? dl : 0.0));
    }
    return kl;
}

/* Min-heap of (value, id) where "smaller" = worse: lower value, or equal value and higher id. */
static inline bool worse(float va, int32_t ia, float vb, int32_t ib) { return va < vb || (va == vb && ia > ib); }

static void heap_sift_down(float *val, int32_t *id, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(val[l], id[l], val[m], id[m])) m = l;
        if (r < n && worse(val[r], id[r], val[m], id[m])) m = r;
        if (m == i) return;
        float tv = val[i]; val[i] = val[m]; val[m] = tv;
        int32_t ti = id[i]; id[i] = id[m]; id[m] = ti;
        i = m;
    }
}

void cpu_topk_logprobs_row(const float *logits, int V, int k, int32_t *ids, float *logp) {
    CHECK(k >= 1 && k <= V, "cpu_topk_logprobs_row: k = %d outside [1, V=%d]", k, V);
    /* ids/logp double as the heap storage (values are raw logits until the end). */
    for (int i = 0; i < k; i++) {
        ids[i] = i;
        logp[i] = logits[i];
    }
    for (int i = k / 2 - 1; i >= 0; i--) heap_sift_down(logp, ids, k, i);
    for (int v = k; v < V; v++) {
        if (worse(logp[0], ids[0], logits[v], v)) {
            logp[0] = logits[v];
            ids[0] = v;
            heap_sift_down(logp, ids, k, 0);
        }
    }
    /* Heap-sort in place: repeatedly move the worst to the end → best first. */
    for (int n = k - 1; n > 0; n--) {
        float tv = logp[0]; logp[0] = logp[n]; logp[n] = tv;
        int32_t ti = ids[0]; ids[0] = ids[n]; ids[n] = ti;
        heap_sift_down(logp, ids, n, 0);
    }
    double lse = logsumexp_row(logits, V);
    for (int i = 0; i < k; i++) logp[i] = (float)(logp[i] - lse);
}

/* ---- op_vocab_rows on the CPU ---- */

static void vocab_logp(const ops_vocab_op *op, float *logits, int r0, int rows) {
    const int32_t *target = (const int32_t *)op->target.p + r0;
    float *lse = op->chunk_lse.p;
    float *logp = op->logp.p ? (float *)op->logp.p + r0 : (float *)op->chunk_logp.p; /* forward output, also with want_grad */
    cpu_logsoftmax_gather_fwd(logp, lse, logits, target, rows, op->V);
    if (op->want_grad) cpu_logsoftmax_gather_bwd(logits, lse, (const float *)op->dlogp.p + r0, target, rows, op->V);
}

/* fkl and the teacher side: one row at a time, in row order (the KL sums are combined by the caller in order). */
static void vocab_teacher_rows(const ops_vocab_op *op, float *logits, int r0, int rows) {
    const int V = op->V, k = op->k;
    const int32_t *slots = (const int32_t *)op->row_slot.p;
    for (int t = r0; t < r0 + rows; t++) {
        float *row = logits + (size_t)(t - r0) * V;
        int slot = slots[t];
        if (slot < 0) {
            if (op->want_grad) memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        double kl = 0;
        switch (op->kind) {
        case VOCAB_FKL_FULL:
            kl = cpu_fkl_full_row((const float *)op->full_logp.p + (size_t)slot * V, row, V,
                                  op->want_grad ? op->scale : 0.0f, row);
            break;
        case VOCAB_FKL_TOPK:
            kl = cpu_fkl_topk_row((const int32_t *)op->topk_ids.p + (size_t)slot * k,
                                  (const float *)op->topk_logp.p + (size_t)slot * k, k, row, V,
                                  op->want_grad ? op->scale : 0.0f, row);
            break;
        case VOCAB_RKL_FULL:
        case VOCAB_RKL_TOPK: {
            /* the optional sampled-token term of this row (opd's reference part at λ ≠ 1) */
            float dl = op->want_grad && op->dlogp.p ? ((const float *)op->dlogp.p)[t] : 0.0f;
            int32_t target = dl != 0.0f ? ((const int32_t *)op->target.p)[t] : -1;
            float scale = op->want_grad ? op->scale : 0.0f;
            if (op->kind == VOCAB_RKL_FULL)
                kl = cpu_rkl_full_row((const float *)op->full_logp.p + (size_t)slot * V, row, V, op->lambda, scale, dl,
                                      target, row);
            else
                kl = cpu_rkl_topk_row((const int32_t *)op->topk_ids.p + (size_t)slot * k,
                                      (const float *)op->topk_logp.p + (size_t)slot * k, k, row, V, op->lambda,
                                      scale, dl, target, row);
            break;
        }
        case VOCAB_TEACHER_FULL: cpu_log_softmax_row(row, V, (float *)op->full_logp.p + (size_t)slot * V); break;
        case VOCAB_TEACHER_TOPK:
            cpu_topk_logprobs_row(row, V, k, (int32_t *)op->topk_ids.p + (size_t)slot * k,
                                  (float *)op->topk_logp.p + (size_t)slot * k);
            break;
        default: break;
        }
        if (op->row_kl.p) ((double *)op->row_kl.p)[t] = kl;
    }
}

/* Divides n logits by the temperature t (the sampler's float division x / t, so both see the same tempered
 * logits). */
static void divide_by(float *x, size_t n, float t) {
    for (size_t i = 0; i < n; i++) x[i] /= t;
}

void cpu_vocab_rows(const ops_vocab_op *op, float *logits, int r0, int rows) {
    const float t = op->temperature;
    const bool tempered = t != 0.0f && t != 1.0f; /* 0 / 1: the untempered op, bit for bit */
    CHECK(!tempered || (t > 0 && isfinite(t)), "op_vocab_rows: temperature %g must be > 0 and finite", (double)t);
    const size_t n = (size_t)rows * (size_t)op->V;
    if (tempered) divide_by(logits, n, t);
    if (op->kind == VOCAB_LOGP) vocab_logp(op, logits, r0, rows);
    else vocab_teacher_rows(op, logits, r0, rows);
    if (tempered && op->want_grad) divide_by(logits, n, t); /* d/dx of f(x / t) = f'(x / t) / t */
}
