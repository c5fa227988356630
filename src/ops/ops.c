/* ops.c: the backend registry (run-time choice by name), queues, and the op_* entry points that dispatch to a
 * queue's backend table. The CUDA backend (cuda/, built by `make CUDA=1`) defines ops_cuda_backend; this file
 * refers to it weakly, so a CPU-only binary simply has no "cuda" entry. */
#include "ops/ops.h"

#include <stdlib.h>
#include <string.h>

extern const ops_backend ops_cpu_backend;
extern const ops_backend ops_cuda_backend __attribute__((weak));

size_t ops_dtype_bytes(ops_dtype dt) {
    switch (dt) {
    case OPS_F32: return 4;
    case OPS_BF16: return 2;
    case OPS_I32: return 4;
    case OPS_F64: return 8;
    }
    return 1;
}

const char *ops_dtype_name(ops_dtype dt) {
    switch (dt) {
    case OPS_F32: return "f32";
    case OPS_BF16: return "bf16";
    case OPS_I32: return "i32";
    case OPS_F64: return "f64";
    }
    return "?";
}

const ops_backend *const *ops_backends(int *n) {
    static const ops_backend *list[2];
    static int count = 0;
    if (count == 0) {
        list[count++] = &ops_cpu_backend;
        if (&ops_cuda_backend) list[count++] = &ops_cuda_backend;
    }
    *n = count;
    return list;
}

const char *ops_backend_name(const ops_backend *be) { return be->name; }
int ops_backend_devices(const ops_backend *be) { return be->device_count(); }
void ops_backend_describe(const ops_backend *be, int device, char *out, size_t cap) { be->describe(device, out, cap); }

bool ops_open(const char *spec, ops_queue **out, s2d_err *err) {
    *out = NULL;
    char name[32];
    size_t len = strcspn(spec, ":");
    if (len == 0 || len >= sizeof name) return err_set(err, "device '%s': expected NAME or NAME:N (cpu, cuda, cuda:1)", spec);
    memcpy(name, spec, len), name[len] = 0;
    int device = 0;
    if (spec[len] == ':') {
        char *end;
        long d = strtol(spec + len + 1, &end, 10);
        if (end == spec + len + 1 || *end || d < 0 || d > 1024)
            return err_set(err, "device '%s': the part after ':' must be a device index (e.g. cuda:0)", spec);
        device = (int)d;
    }
    int n;
    const ops_backend *const *list = ops_backends(&n);
    const ops_backend *be = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(list[i]->name, name) == 0) be = list[i];
    if (!be) {
        char have[128] = "";
        for (int i = 0; i < n; i++) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", i ? ", " : "", list[i]->name);
        if (strcmp(name, "cuda") == 0)
            return err_set(err, "device '%s': this s2d was built without the CUDA backend (build it with `make CUDA=1`; "
                                "compiled backends: %s)", spec, have);
        return err_set(err, "device '%s': unknown backend '%s' (compiled backends: %s)", spec, name, have);
    }
    int count = be->device_count();
    if (count == 0) return err_set(err, "device '%s': the %s backend sees no device (see `s2d devices`)", spec, name);
    if (device >= count)
        return err_set(err, "device '%s': the %s backend sees %d device%s (%s:0%s)", spec, name, count,
                       count == 1 ? "" : "s", name, count > 1 ? " .. " : "");
    ops_queue *q = xcalloc(1, sizeof *q);
    q->be = be;
    q->device = device;
    if (!be->queue_init(q, device, err)) {
        free(q);
        return err_prefix(err, "device '%s'", spec);
    }
    *out = q;
    return true;
}

void ops_close(ops_queue *q) {
    if (!q || q == ops_cpu()) return;
    q->be->queue_free(q);
    free(q);
}

ops_queue *ops_cpu(void) {
    static ops_queue *cpu = NULL;
    if (!cpu) {
        s2d_err err;
        cpu = xcalloc(1, sizeof *cpu);
        cpu->be = &ops_cpu_backend;
        CHECK_OK(ops_cpu_backend.queue_init(cpu, 0, &err), &err);
    }
    return cpu;
}

static ops_queue *default_queue = NULL;
ops_queue *ops_default(void) {
    if (!default_queue) { /* S2D_DEVICE: the default for programs without --device (tests, tools, benches) */
        const char *spec = getenv("S2D_DEVICE");
        s2d_err err;
        if (spec && *spec && !ops_open(spec, &default_queue, &err)) die_hint("s2d devices", "S2D_DEVICE: %s", err.msg);
        if (!default_queue) default_queue = ops_cpu();
    }
    return default_queue;
}
void ops_set_default(ops_queue *q) { default_queue = q; }

void ops_reserve(ops_queue *q, int max_seq_len, int max_rows, int vocab, size_t max_elems) {
    q->be->reserve(q, max_seq_len, max_rows, vocab, max_elems);
}

/* ---- buffers ---- */

ops_tensor ops_alloc(ops_queue *q, ops_dtype dt, size_t n) {
    return (ops_tensor){q->be->alloc(q, n * ops_dtype_bytes(dt)), dt};
}
void ops_free(ops_queue *q, ops_tensor t) {
    if (t.p) q->be->free(q, t.p);
}
void ops_upload(ops_queue *q, ops_tensor dst, const void *src, size_t n) {
    if (n) q->be->upload(q, dst.p, src, n * ops_dtype_bytes(dst.dt));
}
void ops_download(ops_queue *q, void *dst, ops_tensor src, size_t n) {
    if (n) q->be->download(q, dst, src.p, n * ops_dtype_bytes(src.dt));
}
void ops_copy(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n) {
    CHECK(dst.dt == src.dt, "ops_copy: %s into %s", ops_dtype_name(src.dt), ops_dtype_name(dst.dt));
    if (n) q->be->copy(q, dst.p, src.p, n * ops_dtype_bytes(dst.dt));
}
void ops_zero(ops_queue *q, ops_tensor dst, size_t n) {
    if (n) q->be->zero(q, dst.p, n * ops_dtype_bytes(dst.dt));
}
void ops_sync(ops_queue *q) { q->be->sync(q); }
void *ops_host_ptr(ops_queue *q, ops_tensor t) { return q->host_memory ? t.p : NULL; }
ops_tensor ops_stage(ops_queue *q, ops_tensor dev, const void *host, size_t n) {
    if (q->host_memory) return (ops_tensor){(void *)host, dev.dt};
    ops_upload(q, dev, host, n);
    return dev;
}

/* ---- ops ---- */

void op_matmul(ops_queue *q, ops_tensor C, ops_tensor A, ops_tensor B, int M, int N, int K, bool ta, bool tb,
               bool acc) {
    q->be->matmul(q, C, A, B, M, N, K, ta, tb, acc);
}
void op_linear_fwd(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out) {
    q->be->matmul(q, y, x, W, T, out, in, false, true, false);
}
void op_linear_bwd(ops_queue *q, ops_tensor dx, ops_tensor dW, ops_tensor dy, ops_tensor x, ops_tensor W, int T,
                   int in, int out, bool accumulate_dx) {
    if (dx.p) q->be->matmul(q, dx, dy, W, T, in, out, false, false, accumulate_dx);
    if (dW.p) q->be->matmul(q, dW, dy, x, out, in, T, true, false, true);
}
void op_linear_rows(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out, bool acc) {
    q->be->linear_rows(q, y, x, W, T, in, out, acc);
}
void op_rmsnorm_fwd(ops_queue *q, ops_tensor y, ops_tensor rstd, ops_tensor x, ops_tensor w, int rows, int dim,
                    float eps) {
    q->be->rmsnorm_fwd(q, y, rstd, x, w, rows, dim, eps);
}
void op_rmsnorm_bwd(ops_queue *q, ops_tensor dx, ops_tensor dw, ops_tensor dy, ops_tensor x, ops_tensor w,
                    ops_tensor rstd, int rows, int dim, bool acc) {
    q->be->rmsnorm_bwd(q, dx, dw, dy, x, w, rstd, rows, dim, acc);
}
void op_rope_fwd(ops_queue *q, ops_tensor x, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int nh, int hd) {
    q->be->rope(q, x, pos, cos, sin, T, nh, hd, false);
}
void op_rope_bwd(ops_queue *q, ops_tensor dx, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int nh, int hd) {
    q->be->rope(q, dx, pos, cos, sin, T, nh, hd, true);
}
void op_attention_fwd(ops_queue *q, ops_tensor out, ops_tensor lse, ops_tensor qh, ops_tensor k, ops_tensor v,
                      int n_seqs, const int *seq_start, int nh, int nkv, int hd) {
    q->be->attention_fwd(q, out, lse, qh, k, v, n_seqs, seq_start, nh, nkv, hd);
}
void op_attention_bwd(ops_queue *q, ops_tensor dq, ops_tensor dk, ops_tensor dv, ops_tensor dout, ops_tensor qh,
                      ops_tensor k, ops_tensor v, ops_tensor out, ops_tensor lse, int n_seqs, const int *seq_start,
                      int nh, int nkv, int hd) {
    q->be->attention_bwd(q, dq, dk, dv, dout, qh, k, v, out, lse, n_seqs, seq_start, nh, nkv, hd);
}
void op_attention_prefill(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k, ops_tensor v, int n, int p0,
                          int nh, int nkv, int hd) {
    q->be->attention_prefill(q, out, qh, k, v, n, p0, nh, nkv, hd);
}
void op_attention_decode(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k_cache, ops_tensor v_cache,
                         int slot_len, const int *slots, const int *ctx_len, int n, int nh, int nkv, int hd) {
    q->be->attention_decode(q, out, qh, k_cache, v_cache, slot_len, slots, ctx_len, n, nh, nkv, hd);
}
void op_kv_write(ops_queue *q, ops_tensor cache, ops_tensor rows, int slot_len, const int *slots, const int *pos,
                 int n, int width) {
    q->be->kv_write(q, cache, rows, slot_len, slots, pos, n, width);
}
void op_bias_add(ops_queue *q, ops_tensor y, ops_tensor b, int rows, int n) { q->be->bias_add(q, y, b, rows, n); }
void op_bias_bwd(ops_queue *q, ops_tensor db, ops_tensor dy, int rows, int n) { q->be->bias_bwd(q, db, dy, rows, n); }
void op_swiglu_fwd(ops_queue *q, ops_tensor h, ops_tensor gate, ops_tensor up, size_t n) {
    q->be->swiglu_fwd(q, h, gate, up, n);
}
void op_swiglu_bwd(ops_queue *q, ops_tensor dgate, ops_tensor dup, ops_tensor dh, ops_tensor gate, ops_tensor up,
                   size_t n) {
    q->be->swiglu_bwd(q, dgate, dup, dh, gate, up, n);
}
void op_embedding_fwd(ops_queue *q, ops_tensor out, ops_tensor table, ops_tensor tokens, int T, int dim) {
    q->be->embedding_fwd(q, out, table, tokens, T, dim);
}
void op_embedding_bwd(ops_queue *q, ops_tensor dtable, ops_tensor dout, ops_tensor tokens, int T, int dim) {
    q->be->embedding_bwd(q, dtable, dout, tokens, T, dim);
}
void op_vocab_rows(ops_queue *q, const ops_vocab_op *op, ops_tensor logits, int r0, int rows) {
    q->be->vocab_rows(q, op, logits, r0, rows);
}
void op_add(ops_queue *q, ops_tensor y, ops_tensor x, size_t n) { q->be->add(q, y, x, n); }
void op_scale(ops_queue *q, ops_tensor y, float s, size_t n) { q->be->scale(q, y, s, n); }
double op_sumsq(ops_queue *q, ops_tensor x, size_t n) { return q->be->sumsq(q, x, n); }
void op_adamw(ops_queue *q, ops_tensor params, ops_tensor grads, ops_tensor m, ops_tensor v, const ops_segment *segs,
              int n_segs, const ops_adamw_step *a) {
    q->be->adamw(q, params, grads, m, v, segs, n_segs, a);
}
void op_sample(ops_queue *q, ops_tensor logits, int n, int V, const ops_sampling *sp, const uint64_t *seq_ids,
               const uint64_t *positions, int32_t *ids_out, float *logp_out) {
    if (n > 0) q->be->sample(q, logits, n, V, sp, seq_ids, positions, ids_out, logp_out);
}
bool op_bf16_mirror(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n, bool fresh) {
    return q->be->bf16_mirror(q, dst, src, n, fresh);
}
