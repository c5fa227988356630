/* safetensors reader/writer and bf16/f16 conversion.
 * References: closed-form round-to-nearest-even in double arithmetic; files and conversions made by PyTorch and
 * the Python `safetensors` library (tests/fixtures/safetensors, from tools/make_safetensors_fixture.py); one
 * hand-built malformed file per validation rule, each asserted to give its own message. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/half.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "test.h"

static char g_tmp[4096];       /* scratch directory, removed at the end */
static char g_fixtures[4096];  /* tests/fixtures/safetensors */

static uint32_t fbits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static float bitsf(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Round x to `sig_bits` significant bits, ties to even, with quantum never below 2^min_quantum_exp (the
 * subnormal spacing) and overflow to inf past max_finite: the definition of an IEEE conversion. */
static float ref_round(float x, int sig_bits, int min_quantum_exp, double max_finite) {
    if (isnan(x) || isinf(x) || x == 0) return x;
    int e;
    frexp(x, &e); /* |x| = m * 2^e, m in [0.5, 1) */
    int q = S2D_MAX(e - sig_bits, min_quantum_exp);
    double r = ldexp(rint(ldexp((double)x, -q)), q); /* rint: the default mode rounds ties to even */
    if (fabs(r) > max_finite) r = copysign(INFINITY, x);
    return (float)r;
}
static float ref_bf16(float x) { return ref_round(x, 8, -133, (2.0 - ldexp(1, -7)) * ldexp(1, 127)); }
static float ref_f16(float x) { return ref_round(x, 11, -24, 65504.0); }

/* fp32 inputs for the conversions: hand-picked edges plus random bit patterns. */
static int conversion_inputs(float *out, int cap) {
    static const uint32_t edges[] = {
        0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x7fbfffff,
        0x7f7fffff, 0x7f7f8000, 0x7f7f7fff, 0xff7f8000, 0x00000001, 0x80000001, 0x00008000, 0x00018000,
        0x007fffff, 0x00800000, 0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0x3f7fffff, 0xbf808000,
        0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x47800000, 0x38800000, 0x387fffff, 0x387fe000,
        0x33000000, 0x33000001, 0x32ffffff, 0x33800000, 0x33c00000, 0x34200000, 0x3f801000, 0x3f803000,
        0x3f801001, 0xb3000000, 0xb3000001, 0x3a800800, 0x3a801800};
    int n = 0;
    for (size_t i = 0; i < S2D_ARRAY_LEN(edges); i++) out[n++] = bitsf(edges[i]);
    rng_stream r;
    rng_stream_init(&r, 7, 1);
    while (n < cap / 2) out[n++] = bitsf(rng_next_u32(&r));
    /* Values in the f16 range, with the low bits at ties half of the time. */
    while (n < cap) {
        uint32_t u = rng_next_u32(&r);
        uint32_t e = 100 + rng_next_below(&r, 45); /* 2^-27 .. 2^17 */
        u = (u & 0x807fffffu) | (e << 23);
        if (n % 2) u = (u & ~0x1fffu) | 0x1000u;
        out[n++] = bitsf(u);
    }
    return n;
}

static void test_bf16_closed_form(void) {
    enum { N = 20000 };
    static float x[N];
    int n = conversion_inputs(x, N);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        uint16_t h = f32_to_bf16(x[i]);
        float got = bf16_to_f32(h), want = ref_bf16(x[i]);
        bool ok = isnan(x[i]) ? isnan(got) : fbits(got) == fbits(want);
        if (!ok && bad++ < 5) EXPECT(0, "bf16(%08x) = %04x, want %08x", fbits(x[i]), h, fbits(want));
    }
    EXPECT(bad == 0, "%d of %d bf16 conversions differ from the closed form", bad, n);
    /* Spot values: ties go to even, NaN stays NaN with its sign, overflow to inf. */
    EXPECT(f32_to_bf16(bitsf(0x3f808000)) == 0x3f80, "tie to even (down)");
    EXPECT(f32_to_bf16(bitsf(0x3f818000)) == 0x3f82, "tie to even (up)");
    EXPECT(f32_to_bf16(bitsf(0xffc00001)) == 0xffc0, "NaN keeps sign and stays quiet");
    EXPECT(f32_to_bf16(bitsf(0x7f800001)) == 0x7fc0, "signalling NaN becomes a quiet NaN, not inf");
    EXPECT(f32_to_bf16(bitsf(0x7f7fffff)) == 0x7f80, "max float rounds to inf");
    EXPECT(f32_to_bf16(bitsf(0x00018000)) == 0x0002, "subnormal tie to even");
    /* Every bf16 pattern widens exactly and narrows back to itself. */
    int back = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        back += fbits(f) == (h << 16) && (isnan(f) ? f32_to_bf16(f) == (h | 0x40) : f32_to_bf16(f) == h);
    }
    EXPECT(back == 65536, "bf16 -> f32 -> bf16: %d of 65536 patterns survive", back);
}

static void test_f16_closed_form(void) {
    enum { N = 20000 };
    static float x[N];
    int n = conversion_inputs(x, N);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        uint16_t h = f32_to_f16(x[i]);
        float got = f16_to_f32(h), want = ref_f16(x[i]);
        bool ok = isnan(x[i]) ? isnan(got) && (h & 0x8000) == ((fbits(x[i]) >> 16) & 0x8000) : fbits(got) == fbits(want);
        if (!ok && bad++ < 5) EXPECT(0, "f16(%08x) = %04x, want %08x", fbits(x[i]), h, fbits(want));
    }
    EXPECT(bad == 0, "%d of %d f16 conversions differ from the closed form", bad, n);
    EXPECT(f32_to_f16(65504.0f) == 0x7bff && f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(65519.99f) == 0x7bff,
           "f16 overflow boundary (65520 is a tie that rounds to inf)");
    EXPECT(f32_to_f16(ldexpf(1, -24)) == 0x0001 && f32_to_f16(ldexpf(1, -25)) == 0x0000 &&
               f32_to_f16(ldexpf(3, -25)) == 0x0002 && f32_to_f16(-ldexpf(1, -26)) == 0x8000,
           "f16 subnormals: 2^-24 is the smallest, 2^-25 ties to 0, 3*2^-25 ties to 2");
    /* Every f16 pattern against the format's definition, and back. */
    int good = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, m = h & 1023;
        double mag = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
        double want = (h & 0x8000) ? -mag : mag;
        float f = f16_to_f32((uint16_t)h);
        bool same = isnan(want) ? isnan(f) : (double)f == want && !signbit(f) == !signbit(want);
        bool round_trip = isnan(want) || f32_to_f16(f) == h;
        good += same && round_trip;
    }
    EXPECT(good == 65536, "f16 decode + round trip: %d of 65536 patterns right", good);
    /* Array helpers agree with the scalar ones. */
    static uint16_t hb[N], hf[N];
    static float y[N];
    f32_to_bf16_array(x, hb, (size_t)n);
    f32_to_f16_array(x, hf, (size_t)n);
    int same = 0;
    for (int i = 0; i < n; i++) same += hb[i] == f32_to_bf16(x[i]) && hf[i] == f32_to_f16(x[i]);
    f16_to_f32_array(hf, y, (size_t)n);
    for (int i = 0; i < n; i++) same += fbits(y[i]) == fbits(f16_to_f32(hf[i]));
    EXPECT(same == 2 * n, "array helpers match scalar conversions");
}

/* ---- fixtures made by PyTorch + safetensors ---- */

static cJSON *load_json(const char *path) {
    char *text;
    s2d_err err;
    if (!read_file(path, &text, NULL, &err)) {
        EXPECT(0, "%s", err.msg);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    EXPECT(j != NULL, "%s: bad JSON", path);
    return j;
}

static uint32_t json_u32_at(const cJSON *arr, int i) { return (uint32_t)cJSON_GetArrayItem(arr, i)->valuedouble; }

static void test_read_torch_fixture(void) {
    char path[4096];
    path_join(path, sizeof path, g_fixtures, "expected.json");
    cJSON *exp = load_json(path);
    if (!exp) return;
    path_join(path, sizeof path, g_fixtures, "tiny.safetensors");
    st_set *set;
    s2d_err err;
    bool ok = st_open_file(path, &set, &err);
    EXPECT(ok, "open fixture: %s", err.msg);
    if (!ok) {
        cJSON_Delete(exp);
        return;
    }
    const cJSON *tensors = cJSON_GetObjectItem(exp, "tensors");
    EXPECT(st_count(set) == cJSON_GetArraySize(tensors), "tensor count %d, want %d", st_count(set),
           cJSON_GetArraySize(tensors));
    for (int i = 1; i < st_count(set); i++)
        EXPECT(strcmp(st_at(set, i - 1)->name, st_at(set, i)->name) < 0, "st_at is sorted by name");
    const cJSON *meta = cJSON_GetObjectItem(exp, "metadata");
    for (const cJSON *kv = meta->child; kv; kv = kv->next) {
        const char *v = st_metadata(set, kv->string);
        EXPECT(v && strcmp(v, kv->valuestring) == 0, "metadata %s = %s", kv->string, v ? v : "(absent)");
    }
    EXPECT(st_metadata(set, "nope") == NULL, "absent metadata key gives NULL");
    EXPECT(st_find(set, "nope") == NULL && st_find(set, "") == NULL, "absent tensor gives NULL");

    for (const cJSON *e = tensors->child; e; e = e->next) {
        const st_tensor *t = st_find(set, e->string);
        EXPECT(t != NULL, "tensor %s found", e->string);
        if (!t) continue;
        EXPECT_STREQ(st_dtype_name(t->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(e, "shape"), *off = cJSON_GetObjectItem(e, "data_offsets");
        bool shape_ok = t->ndim == cJSON_GetArraySize(shape);
        int64_t numel = 1;
        for (int d = 0; shape_ok && d < t->ndim; d++) {
            shape_ok = t->shape[d] == (int64_t)json_u32_at(shape, d);
            numel *= t->shape[d];
        }
        EXPECT(shape_ok && t->numel == numel, "%s: shape", e->string);
        EXPECT(t->nbytes == (size_t)(cJSON_GetArrayItem(off, 1)->valuedouble - cJSON_GetArrayItem(off, 0)->valuedouble),
               "%s: byte size", e->string);
        const cJSON *bits = cJSON_GetObjectItem(e, "bits"), *ints = cJSON_GetObjectItem(e, "ints");
        const uint8_t *raw = t->data;
        if (bits) { /* raw storage, element by element */
            size_t es = st_dtype_size(t->dtype);
            int same = 0;
            for (int i = 0; i < t->numel; i++) {
                uint32_t v = 0;
                memcpy(&v, raw + es * (size_t)i, es);
                same += v == json_u32_at(bits, i);
            }
            EXPECT(same == t->numel, "%s: %d of %d stored values match", e->string, same, (int)t->numel);
            float *f = xmalloc(sizeof(float) * (size_t)(t->numel + 1));
            ok = st_read_f32(t, f, (size_t)t->numel, &err);
            EXPECT(ok, "%s: st_read_f32: %s", e->string, err.msg);
            const cJSON *wide = cJSON_GetObjectItem(e, "as_f32_bits");
            if (!wide) wide = bits;
            same = 0;
            for (int i = 0; ok && i < t->numel; i++) {
                uint32_t w = json_u32_at(wide, i);
                same += isnan(bitsf(w)) ? isnan(f[i]) : fbits(f[i]) == w;
            }
            EXPECT(same == t->numel, "%s: %d of %d widened values match torch's .float()", e->string, same,
                   (int)t->numel);
            free(f);
        }
        if (ints) {
            int64_t *v = xmalloc(sizeof(int64_t) * (size_t)t->numel);
            ok = st_read_i64(t, v, (size_t)t->numel, &err);
            EXPECT(ok, "%s: st_read_i64: %s", e->string, err.msg);
            int same = 0;
            for (int i = 0; ok && i < t->numel; i++) same += v[i] == (int64_t)cJSON_GetArrayItem(ints, i)->valuedouble;
            EXPECT(same == t->numel, "%s: integer values", e->string);
            free(v);
        }
    }
    /* Typed-read errors name the tensor and the file. */
    int32_t ids[10];
    EXPECT(st_read_i32(st_find(set, "tokens"), ids, 10, &err) && ids[3] == 0 && ids[4] == -1 && ids[9] == INT32_MIN,
           "I32 tokens read raw");
    EXPECT(!st_read_i32(st_find(set, "tokens"), ids, 9, &err) && strstr(err.msg, "\"tokens\"") &&
               strstr(err.msg, "tiny.safetensors") && strstr(err.msg, "but 9 were expected"),
           "count mismatch: %s", err.msg);
    int32_t pos[4];
    EXPECT(!st_read_i32(st_find(set, "positions"), pos, 4, &err) && strstr(err.msg, "does not fit in int32"),
           "I64 beyond int32: %s", err.msg);
    float fl[10];
    EXPECT(!st_read_f32(st_find(set, "tokens"), fl, 10, &err) && strstr(err.msg, "cannot be read as floats"),
           "I32 as floats: %s", err.msg);
    int64_t want_shape[2] = {3, 4}, bad_shape[2] = {4, 3};
    EXPECT(st_check_shape(st_find(set, "w_f32"), 2, want_shape, &err), "shape check passes");
    EXPECT(!st_check_shape(st_find(set, "w_f32"), 2, bad_shape, &err) && strstr(err.msg, "shape [3, 4], expected [4, 3]"),
           "shape check message: %s", err.msg);
    const st_tensor *sc = st_find(set, "scalar");
    EXPECT(sc && sc->ndim == 0 && sc->numel == 1 && st_read_f32(sc, fl, 1, &err) && fl[0] == 2.5f, "scalar tensor");
    const st_tensor *em = st_find(set, "empty");
    EXPECT(em && em->ndim == 2 && em->numel == 0 && st_read_f32(em, NULL, 0, &err), "empty tensor");

    /* torch's conversions are the reference for ours (torch writes every NaN as 0xffff, so NaN-ness only). */
    const char *pairs[2][2] = {{"bf16_src", "bf16_of_src"}, {"f16_src", "f16_of_src"}};
    for (int p = 0; p < 2; p++) {
        const st_tensor *src = st_find(set, pairs[p][0]), *conv = st_find(set, pairs[p][1]);
        if (!src || !conv) continue;
        size_t n = (size_t)src->numel;
        float *x = xmalloc(n * sizeof *x);
        float *torch_val = xmalloc(n * sizeof *torch_val);
        CHECK_OK(st_read_f32(src, x, n, &err), &err);
        CHECK_OK(st_read_f32(conv, torch_val, n, &err), &err);
        int same = 0;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = p == 0 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
            float ours = p == 0 ? bf16_to_f32(h) : f16_to_f32(h);
            bool ok_i = isnan(torch_val[i]) ? isnan(ours) : fbits(ours) == fbits(torch_val[i]);
            if (!ok_i) fprintf(stderr, "  %s[%zu]: x=%08x ours %08x torch %08x\n", pairs[p][1], i, fbits(x[i]),
                               fbits(ours), fbits(torch_val[i]));
            same += ok_i;
        }
        EXPECT(same == (int)n, "%s: %d of %zu conversions match torch", pairs[p][1], same, n);
        free(x);
        free(torch_val);
    }
    st_close(set);
    cJSON_Delete(exp);
}

static bool read_all(const char *path, char **data, size_t *len) {
    s2d_err err;
    bool ok = read_file(path, data, len, &err);
    EXPECT(ok, "%s", err.msg);
    return ok;
}

/* s2d's writer must produce what the reference writer produced for the same inputs, byte for byte. */
static void test_writer_matches_reference(void) {
    char path[4096], out[4096];
    path_join(path, sizeof path, g_fixtures, "tiny.safetensors");
    st_set *set;
    s2d_err err;
    if (!st_open_file(path, &set, &err)) {
        EXPECT(0, "%s", err.msg);
        return;
    }
    float w[12], src[16], z;
    int32_t ids[10];
    CHECK_OK(st_read_f32(st_find(set, "w_f32"), w, 12, &err), &err);
    const st_tensor *s = st_find(set, "bf16_src");
    memcpy(src, (const uint8_t *)s->data + 7 * sizeof(float), sizeof src); /* bf16_src[7:23]: overflow, ties, subnormals; no NaN */
    CHECK_OK(st_read_f32(st_find(set, "scalar"), &z, 1, &err), &err);
    CHECK_OK(st_read_i32(st_find(set, "tokens"), ids, 10, &err), &err);
    st_write_tensor t[4] = {
        {.name = "b.weight", .ndim = 2, .shape = {3, 4}, .f32 = w},
        {.name = "a.weight", .ndim = 2, .shape = {4, 4}, .f32 = src},
        {.name = "ids", .ndim = 2, .shape = {2, 5}, .i32 = ids},
        {.name = "z", .ndim = 0, .f32 = &z},
    };
    st_meta meta[1] = {{"format", "pt"}};
    path_join(out, sizeof out, g_tmp, "ours.safetensors");
    EXPECT(st_write(out, t, 4, ST_BF16, meta, 1, &err), "write: %s", err.msg);
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    path_join(path, sizeof path, g_fixtures, "writer_ref.safetensors");
    if (read_all(out, &a, &na) && read_all(path, &b, &nb)) {
        size_t at = 0;
        while (at < na && at < nb && a[at] == b[at]) at++;
        EXPECT(na == nb && at == na, "our file (%zu bytes) differs from safetensors' (%zu bytes) at byte %zu", na, nb,
               at);
        if (at < na && at < 400) fprintf(stderr, "  ours:   %.*s\n  theirs: %.*s\n", (int)(na - 8), a + 8, (int)(nb - 8), b + 8);
    }
    free(a);
    free(b);
    st_close(set);
}

static void test_read_torch_sharded(void) {
    char dir[4096], path[4096];
    path_join(dir, sizeof dir, g_fixtures, "sharded");
    path_join(path, sizeof path, dir, "expected.json");
    cJSON *exp = load_json(path);
    st_set *set;
    s2d_err err;
    bool ok = exp && st_open_dir(dir, &set, &err);
    EXPECT(ok, "open sharded fixture: %s", err.msg);
    if (!ok) {
        cJSON_Delete(exp);
        return;
    }
    EXPECT(st_count(set) == cJSON_GetArraySize(exp), "sharded tensor count %d", st_count(set));
    for (const cJSON *e = exp->child; e; e = e->next) {
        const st_tensor *t = st_find(set, e->string);
        EXPECT(t && strstr(t->file, strcmp(e->string, "lm_head.weight") == 0 ? "00002-of" : "00001-of"),
               "%s is found in its shard", e->string);
        if (!t) continue;
        float v[64];
        int same = 0;
        CHECK_OK(st_read_f32(t, v, (size_t)t->numel, &err), &err);
        for (int i = 0; i < t->numel; i++) same += fbits(v[i]) == json_u32_at(e, i);
        EXPECT(same == t->numel, "%s values", e->string);
    }
    EXPECT(st_metadata(set, "format") && strcmp(st_metadata(set, "format"), "pt") == 0, "shard metadata");
    st_close(set);
    cJSON_Delete(exp);
}

/* ---- round trips through our writer and reader ---- */

static void fill_random(float *x, size_t n, uint64_t seed) {
    rng_stream r;
    rng_stream_init(&r, seed, 3);
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_next_normal(&r) * 3.0);
}

static void test_round_trip(void) {
    enum { N0 = 257 * 3, N1 = 64 };
    static float a[N0], b[N1], back[N0];
    fill_random(a, N0, 1);
    fill_random(b, N1, 2);
    /* special values ride along: they must survive each format as its conversion defines */
    a[0] = INFINITY, a[1] = -INFINITY, a[2] = NAN, a[3] = -0.0f, a[4] = 1e-40f, a[5] = 70000.0f, a[6] = bitsf(0x3f808000);
    int32_t ids[5] = {1, -2, 3, INT32_MAX, INT32_MIN};
    float scalar = 0.125f;
    st_write_tensor t[] = {
        {.name = "layers.0.w", .ndim = 2, .shape = {257, 3}, .f32 = a},
        {.name = "layers.0.b", .ndim = 3, .shape = {4, 4, 4}, .f32 = b},
        {.name = "tok\"quoted\\name\n", .ndim = 1, .shape = {5}, .i32 = ids},
        {.name = "s", .ndim = 0, .f32 = &scalar},
        {.name = "nothing", .ndim = 2, .shape = {0, 7}, .f32 = b},
    };
    st_meta meta[] = {{"format", "pt"}, {"note", "unicode \xce\xbb and \"quotes\""}};
    const st_dtype dtypes[] = {ST_F32, ST_BF16, ST_F16};
    for (int k = 0; k < 3; k++) {
        char path[4096];
        s2d_err err;
        path_join(path, sizeof path, g_tmp, "rt.safetensors");
        EXPECT(st_write(path, t, 5, dtypes[k], meta, 2, &err), "write %s: %s", st_dtype_name(dtypes[k]), err.msg);
        char *img = NULL;
        size_t len = 0;
        if (read_all(path, &img, &len)) {
            uint64_t n = 0;
            memcpy(&n, img, 8);
            EXPECT(n % 8 == 0 && img[8] == '{', "header padded to 8 bytes (length %llu)", (unsigned long long)n);
        }
        free(img);
        st_set *set;
        if (!st_open_file(path, &set, &err)) {
            EXPECT(0, "read back %s: %s", st_dtype_name(dtypes[k]), err.msg);
            continue;
        }
        EXPECT(st_count(set) == 5, "5 tensors");
        const st_tensor *w = st_find(set, "layers.0.w");
        EXPECT(w && w->dtype == dtypes[k] && w->ndim == 2 && w->shape[0] == 257 && w->shape[1] == 3, "shape/dtype");
        int same = 0;
        if (w && st_read_f32(w, back, N0, &err)) {
            for (int i = 0; i < N0; i++) {
                float want = dtypes[k] == ST_F32 ? a[i] : dtypes[k] == ST_BF16 ? ref_bf16(a[i]) : ref_f16(a[i]);
                same += isnan(want) ? isnan(back[i]) : fbits(back[i]) == fbits(want);
            }
        }
        EXPECT(same == N0, "%s round trip: %d of %d values as the closed form says", st_dtype_name(dtypes[k]), same, N0);
        const st_tensor *ti = st_find(set, "tok\"quoted\\name\n");
        int32_t got[5];
        EXPECT(ti && ti->dtype == ST_I32 && st_read_i32(ti, got, 5, &err) && memcmp(got, ids, sizeof ids) == 0,
               "I32 stored raw under an escaped name");
        const st_tensor *ts = st_find(set, "s");
        float sv = 0;
        EXPECT(ts && ts->ndim == 0 && st_read_f32(ts, &sv, 1, &err) && sv == 0.125f, "scalar");
        const st_tensor *tn = st_find(set, "nothing");
        EXPECT(tn && tn->numel == 0 && tn->nbytes == 0, "empty tensor");
        EXPECT(st_metadata(set, "note") && strcmp(st_metadata(set, "note"), meta[1].value) == 0, "metadata");
        st_close(set);
    }
}

static int count_dir_entries(const char *dir, const char *containing) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.' && (!containing || strstr(e->d_name, containing))) n++;
    closedir(d);
    return n;
}

static void rm_dir_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char p[4096];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        path_join(p, sizeof p, dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void write_text_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    path_join(path, sizeof path, dir, name);
    FILE *fp = fopen(path, "w");
    CHECK(fp, "cannot create %s", path);
    fputs(text, fp);
    fclose(fp);
}

/* ~300 tensors, as a real model has: sharded write, load, every tensor found by name. */
static void test_sharded_round_trip(void) {
    enum { NT = 300, NE = 40 };
    static float vals[NT][NE], back[NE];
    static char names[NT][64];
    st_write_tensor t[NT];
    for (int i = 0; i < NT; i++) {
        fill_random(vals[i], NE, 100 + (uint64_t)i);
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.w%d.weight", i / 3, i % 3);
        t[i] = (st_write_tensor){.name = names[i], .ndim = 2, .shape = {8, 5}, .f32 = vals[i]};
    }
    char dir[4096];
    path_join(dir, sizeof dir, g_tmp, "sharded");
    mkdir(dir, 0755);
    rm_dir_files(dir);
    s2d_err err;
    int n_shards = 0;
    st_meta meta[] = {{"format", "pt"}};
    /* 40 bf16 = 80 bytes per tensor; 1000-byte shards hold 12 tensors: 25 shards */
    bool ok = st_write_sharded(dir, "model", t, NT, ST_BF16, meta, 1, 1000, &n_shards, &err);
    EXPECT(ok && n_shards == 25, "sharded write: %d shards (%s)", n_shards, ok ? "" : err.msg);
    EXPECT(count_dir_entries(dir, ".safetensors") == 26 && count_dir_entries(dir, ".tmp.") == 0,
           "25 shards + index, no temp files");
    char path[4096];
    path_join(path, sizeof path, dir, "model-00025-of-00025.safetensors");
    EXPECT(access(path, F_OK) == 0, "shard names follow model-0000i-of-0000N");
    path_join(path, sizeof path, dir, "model.safetensors.index.json");
    cJSON *index = load_json(path);
    if (index) {
        const cJSON *total = cJSON_GetObjectItem(cJSON_GetObjectItem(index, "metadata"), "total_size");
        EXPECT(total && total->valuedouble == NT * NE * 2, "index total_size");
        const cJSON *wm = cJSON_GetObjectItem(index, "weight_map");
        EXPECT(cJSON_GetArraySize(wm) == NT, "index maps every tensor");
        int sorted = 1;
        for (const cJSON *kv = wm->child; kv && kv->next; kv = kv->next) sorted &= strcmp(kv->string, kv->next->string) < 0;
        EXPECT(sorted, "weight_map keys sorted");
        cJSON_Delete(index);
    }
    st_set *set;
    ok = st_open_dir(dir, &set, &err);
    EXPECT(ok, "open sharded: %s", err.msg);
    if (ok) {
        EXPECT(st_count(set) == NT, "all tensors visible");
        int found = 0, exact = 0;
        for (int i = 0; i < NT; i++) {
            const st_tensor *x = st_find(set, names[i]);
            if (!x) continue;
            found++;
            if (!st_read_f32(x, back, NE, &err)) continue;
            int same = 0;
            for (int j = 0; j < NE; j++) same += fbits(back[j]) == fbits(ref_bf16(vals[i][j]));
            exact += same == NE;
        }
        EXPECT(found == NT && exact == NT, "found %d, exact %d of %d", found, exact, NT);
        st_close(set);
    }
    /* One shard's worth: a plain model.safetensors, no index. */
    char dir1[4096];
    path_join(dir1, sizeof dir1, g_tmp, "single");
    mkdir(dir1, 0755);
    rm_dir_files(dir1);
    ok = st_write_sharded(dir1, "model", t, 10, ST_F32, NULL, 0, 1 << 20, &n_shards, &err);
    path_join(path, sizeof path, dir1, "model.safetensors");
    EXPECT(ok && n_shards == 1 && access(path, F_OK) == 0 && count_dir_entries(dir1, NULL) == 1,
           "single shard writes model.safetensors only");
    ok = st_open_dir(dir1, &set, &err);
    EXPECT(ok && st_count(set) == 10, "open single-file dir");
    if (ok) st_close(set);
    /* Saving again replaces the earlier checkpoint: sharded over single, single over sharded. */
    write_text_file(dir1, "model-00001-of-00009.safetensors", "old");
    write_text_file(dir1, "model-extra.safetensors", "keep");
    ok = st_write_sharded(dir1, "model", t, 10, ST_F32, NULL, 0, 200, &n_shards, &err);
    EXPECT(ok && n_shards == 10 && count_dir_entries(dir1, NULL) == 12, "10 shards + index + unrelated file (%d files)",
           count_dir_entries(dir1, NULL));
    ok = st_open_dir(dir1, &set, &err);
    EXPECT(ok && st_count(set) == 10 && strstr(st_at(set, 0)->file, "-of-00010"), "re-saved as shards");
    if (ok) st_close(set);
    ok = st_write_sharded(dir, "model", t, 10, ST_F32, NULL, 0, 1 << 20, &n_shards, &err);
    EXPECT(ok && n_shards == 1 && count_dir_entries(dir, NULL) == 1, "single file replaces 25 shards (%d files)",
           count_dir_entries(dir, NULL));
    rm_dir_files(dir1);
    rmdir(dir1);
}

/* ---- malformed files: one rule each, each with its own message ---- */

typedef struct {
    const char *what;
    const char *header; /* JSON text, NULL: use raw */
    long long declared; /* header length field; -1: the real length */
    size_t data_bytes;  /* bytes of data after the header */
    const char *raw;    /* whole file (when header is NULL) */
    size_t raw_len;
    const char *phrase; /* the message must contain it, and no other case's phrase */
} bad_case;

static const bad_case bad_cases[] = {
    {"file shorter than 8 bytes", NULL, 0, 0, "\x10\0\0", 3, "too small to hold the 8-byte header length"},
    {"header length > 100 MB", "{}", 100000001, 0, NULL, 0, "exceeds the limit of 100000000 bytes"},
    {"header length past EOF", "{}      ", 64, 0, NULL, 0, "runs past the end of the file"},
    {"data truncated", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, 12, NULL, 0,
     "bytes of data but the file has only"},
    {"bad JSON", "{\"a\": {\"dtype\": \"F32\",", -1, 0, NULL, 0, "is not valid JSON (parse error"},
    {"trailing junk after JSON", "{} x", -1, 0, NULL, 0, "(trailing data"},
    {"invalid UTF-8", "{\"\xff\":1}", -1, 0, NULL, 0, "not valid UTF-8"},
    {"header not an object", "[1, 2]", -1, 0, NULL, 0, "not a JSON object"},
    {"metadata not strings", "{\"__metadata__\":{\"k\":1}}", -1, 0, NULL, 0, "must map strings to strings"},
    {"metadata not an object", "{\"__metadata__\":[\"k\"]}", -1, 0, NULL, 0, "it must be an object of string values"},
    {"entry not an object", "{\"a\":5}", -1, 0, NULL, 0, "entry is a number, not an object"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, NULL, 0, "missing \"dtype\""},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", -1, 4, NULL, 0, "missing \"shape\""},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", -1, 4, NULL, 0, "missing \"data_offsets\""},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4, NULL, 0,
     "unknown dtype \"F31\""},
    {"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", -1, 4, NULL, 0,
     "shape[0] is not a non-negative integer"},
    {"non-integer shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", -1, 12, NULL, 0,
     "shape[1] is not a non-negative integer"},
    {"too many dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", -1, 4, NULL,
     0, "more than the 8 supported"},
    {"element count overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", -1, 4, NULL, 0,
     "element count of the shape overflows"},
    {"byte size overflow", "{\"a\":{\"dtype\":\"I64\",\"shape\":[4294967296,1073741824],\"data_offsets\":[0,8]}}", -1,
     8, NULL, 0, "byte size of the shape overflows"},
    {"bad data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", -1, 4, NULL, 0,
     "data_offsets must be [begin, end]"},
    {"begin after end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", -1, 4, NULL, 0,
     "is after end"},
    {"size vs shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", -1, 12, NULL, 0,
     "size does not match shape"},
    {"overlapping offsets",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
     "\"data_offsets\":[4,12]}}",
     -1, 12, NULL, 0, "overlaps tensor"},
    {"gap between offsets",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],"
     "\"data_offsets\":[8,12]}}",
     -1, 12, NULL, 0, "gap in the data"},
    {"first tensor not at 0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", -1, 8, NULL, 0,
     "begins at data byte 4 instead of 0"},
    {"extra bytes after data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 8, NULL, 0,
     "extra bytes after the last tensor"},
    {"duplicate name",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
     "\"data_offsets\":[4,8]}}",
     -1, 8, NULL, 0, "duplicate tensor name \"a\""},
    {"field twice in an entry", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4,
     NULL, 0, "field \"shape\" appears twice"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", -1, 0, NULL, 0, "has \"__metadata__\" twice"},
};

/* Writes a file for case c at path. */
static void write_case(const bad_case *c, const char *path) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp, "cannot create %s", path);
    if (!c->header) {
        fwrite(c->raw, 1, c->raw_len, fp);
    } else {
        uint64_t n = c->declared >= 0 ? (uint64_t)c->declared : strlen(c->header);
        fwrite(&n, 8, 1, fp);
        fwrite(c->header, 1, strlen(c->header), fp);
        for (size_t i = 0; i < c->data_bytes; i++) fputc(0, fp);
    }
    fclose(fp);
}

/* The message must name the file, contain its own phrase and none of the other cases' phrases. */
static void expect_only_phrase(const char *what, const char *msg, const char *file, const char *phrase,
                               const char *const *all, int n_all) {
    EXPECT(strstr(msg, phrase) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg, phrase);
    EXPECT(strstr(msg, file) != NULL, "%s: message \"%s\" does not name the file", what, msg);
    for (int j = 0; j < n_all; j++)
        if (all[j] != phrase && strstr(msg, all[j]))
            EXPECT(0, "%s: message \"%s\" also matches another case's phrase \"%s\"", what, msg, all[j]);
}

/* A shard holding tensor (and tensor2 when non-NULL). */
static void write_shard(const char *dir, const char *name, const char *tensor, const char *tensor2) {
    char path[4096];
    path_join(path, sizeof path, dir, name);
    static const float v[2] = {1, 2};
    st_write_tensor t[2] = {{.name = tensor, .ndim = 1, .shape = {2}, .f32 = v},
                            {.name = tensor2, .ndim = 1, .shape = {2}, .f32 = v}};
    s2d_err err;
    CHECK_OK(st_write(path, t, tensor2 ? 2 : 1, ST_F32, NULL, 0, &err), &err);
}

static void test_malformed(void) {
    enum { NB = (int)S2D_ARRAY_LEN(bad_cases) };
    /* Index cases: a directory with a shard "s1.safetensors" holding tensor "x". */
    static const struct {
        const char *what, *index, *phrase;
    } index_cases[] = {
        {"missing shard", "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}",
         "named in the weight_map is missing"},
        {"tensor missing from its shard", "{\"weight_map\":{\"x\":\"s1.safetensors\",\"q\":\"s1.safetensors\"}}",
         "but that shard has no such tensor"},
        {"shard tensor not in index", "{\"weight_map\":{\"y\":\"s3.safetensors\"}}", "does not list it"},
        {"no weight_map", "{\"metadata\":{}}", "no \"weight_map\" object"},
        {"shard outside the directory", "{\"weight_map\":{\"x\":\"../s1.safetensors\"}}",
         "is not a file inside the model directory"},
        {"index not JSON", "{\"weight_map\":", "index is not valid JSON"},
        {"malformed shard", "{\"weight_map\":{\"x\":\"s1.safetensors\",\"b\":\"bad.safetensors\"}}",
         "shard \"bad.safetensors\": "},
    };
    enum { NI = (int)S2D_ARRAY_LEN(index_cases) };
    const char *phrases[NB + NI + 1];
    for (int i = 0; i < NB; i++) phrases[i] = bad_cases[i].phrase;
    for (int i = 0; i < NI; i++) phrases[NB + i] = index_cases[i].phrase;
    phrases[NB + NI] = "no model.safetensors or model.safetensors.index.json";
    for (int i = 0; i < NB + NI + 1; i++)
        for (int j = 0; j < i; j++) EXPECT(strcmp(phrases[i], phrases[j]) != 0, "phrases %d and %d equal", i, j);

    char path[4096];
    path_join(path, sizeof path, g_tmp, "bad.safetensors");
    for (int i = 0; i < NB; i++) {
        write_case(&bad_cases[i], path);
        st_set *set = NULL;
        s2d_err err = {{0}};
        bool ok = st_open_file(path, &set, &err);
        EXPECT(!ok && set == NULL, "%s: accepted", bad_cases[i].what);
        if (ok) st_close(set);
        else expect_only_phrase(bad_cases[i].what, err.msg, path, bad_cases[i].phrase, phrases, NB + NI + 1);
        /* the in-memory reader applies the same rules */
        char *img;
        size_t len;
        if (read_all(path, &img, &len)) {
            ok = st_open_memory(img, len, "mem", &set, &err);
            EXPECT(!ok && strstr(err.msg, bad_cases[i].phrase), "%s (memory): %s", bad_cases[i].what, err.msg);
            if (ok) st_close(set);
            free(img);
        }
    }
    /* A header the reference accepts: metadata only, no tensors; padding spaces after the JSON. */
    const bad_case fine = {"empty", "{\"__metadata__\":{\"a\":\"b\"}}   ", -1, 0, NULL, 0, NULL};
    write_case(&fine, path);
    st_set *set;
    s2d_err err;
    bool fine_ok = st_open_file(path, &set, &err);
    EXPECT(fine_ok && st_count(set) == 0 && strcmp(st_metadata(set, "a"), "b") == 0, "metadata-only file is valid");
    if (fine_ok) st_close(set);
    unlink(path);

    char dir[4096];
    path_join(dir, sizeof dir, g_tmp, "idx");
    mkdir(dir, 0755);
    for (int i = 0; i < NI; i++) {
        rm_dir_files(dir);
        write_shard(dir, "s1.safetensors", "x", NULL);
        write_shard(dir, "s3.safetensors", "y", "z");
        const bad_case bad_shard = {"bad shard", "{", -1, 0, NULL, 0, NULL};
        path_join(path, sizeof path, dir, "bad.safetensors");
        write_case(&bad_shard, path);
        write_text_file(dir, "model.safetensors.index.json", index_cases[i].index);
        set = NULL;
        bool ok = st_open_dir(dir, &set, &err);
        EXPECT(!ok && set == NULL, "%s: accepted", index_cases[i].what);
        if (ok) st_close(set);
        else if (i == NI - 1) /* the shard's own reason is one of the file cases' messages: checked below */
            EXPECT(strstr(err.msg, index_cases[i].phrase) && strstr(err.msg, "model.safetensors.index.json"), "%s",
                   err.msg);
        else
            expect_only_phrase(index_cases[i].what, err.msg, "model.safetensors.index.json", index_cases[i].phrase,
                               phrases, NB + NI + 1);
    }
    /* the malformed shard's own reason comes through */
    EXPECT(strstr(err.msg, "bad.safetensors: header is not valid JSON (parse error"), "shard reason: %s", err.msg);
    rm_dir_files(dir);
    EXPECT(!st_open_dir(dir, &set, &err) && strstr(err.msg, phrases[NB + NI]) && strstr(err.msg, dir),
           "empty dir: %s", err.msg);
    rmdir(dir);
}

/* ---- failed writes leave nothing behind ---- */

static void test_failed_writes_leave_no_file(void) {
    char dir[4096], path[4096];
    path_join(dir, sizeof dir, g_tmp, "fail");
    mkdir(dir, 0755);
    rm_dir_files(dir);
    path_join(path, sizeof path, dir, "out.safetensors");
    float v[4] = {1, 2, 3, 4};
    int32_t iv[4] = {1, 2, 3, 4};
    s2d_err err;
    st_write_tensor dup[2] = {{.name = "w", .ndim = 1, .shape = {4}, .f32 = v}, {.name = "w", .ndim = 1, .shape = {4}, .i32 = iv}};
    EXPECT(!st_write(path, dup, 2, ST_F32, NULL, 0, &err) && strstr(err.msg, "duplicate tensor name \"w\""),
           "duplicate name refused: %s", err.msg);
    EXPECT(count_dir_entries(dir, NULL) == 0, "nothing written");
    st_write_tensor both = {.name = "w", .ndim = 1, .shape = {4}, .f32 = v, .i32 = iv};
    EXPECT(!st_write(path, &both, 1, ST_F32, NULL, 0, &err) && strstr(err.msg, "exactly one of f32 and i32"), "%s", err.msg);
    st_write_tensor ok_t = {.name = "w", .ndim = 1, .shape = {4}, .f32 = v};
    EXPECT(!st_write(path, &ok_t, 1, ST_I64, NULL, 0, &err) && strstr(err.msg, "cannot be written"), "%s", err.msg);
    st_write_tensor neg = {.name = "w", .ndim = 1, .shape = {-4}, .f32 = v};
    EXPECT(!st_write(path, &neg, 1, ST_F32, NULL, 0, &err) && strstr(err.msg, "bad shape"), "%s", err.msg);
    st_meta dupmeta[2] = {{"k", "1"}, {"k", "2"}};
    EXPECT(!st_write(path, &ok_t, 1, ST_F32, dupmeta, 2, &err) && strstr(err.msg, "given twice"), "%s", err.msg);
    EXPECT(!st_write_sharded(dir, "model", dup, 2, ST_BF16, NULL, 0, 8, NULL, &err), "sharded duplicate refused");
    EXPECT(count_dir_entries(dir, NULL) == 0, "no file after refused writes");
    char missing[4096];
    path_join(missing, sizeof missing, dir, "no/such/dir.safetensors");
    EXPECT(!st_write(missing, &ok_t, 1, ST_F32, NULL, 0, &err) && strstr(err.msg, "cannot create"), "%s", err.msg);

    /* A failing write keeps the previous file intact. */
    EXPECT(st_write(path, &ok_t, 1, ST_F32, NULL, 0, &err), "good write");
    char *before = NULL, *after = NULL;
    size_t nb = 0, na = 0;
    read_all(path, &before, &nb);
    EXPECT(!st_write(path, dup, 2, ST_F32, NULL, 0, &err), "bad write refused");
    read_all(path, &after, &na);
    EXPECT(before && after && na == nb && memcmp(before, after, na) == 0, "old file untouched");
    free(before);
    free(after);
    unlink(path);

    /* The disk "fills" mid-way (file size limit): no shard, no index and no temp file remains. */
    enum { BIG = 4096 };
    static float big[4 * BIG];
    st_write_tensor t3[3] = {{.name = "a", .ndim = 1, .shape = {BIG}, .f32 = big},
                             {.name = "b", .ndim = 1, .shape = {BIG}, .f32 = big + BIG},
                             {.name = "c", .ndim = 1, .shape = {2 * BIG}, .f32 = big + 2 * BIG}};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 20000; /* per file: shards a and b (16 KiB + header each) fit, shard c (32 KiB) does not */
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    bool ok = st_write_sharded(dir, "model", t3, 3, ST_F32, NULL, 0, BIG * 4, NULL, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    EXPECT(!ok && strstr(err.msg, "write failed"), "size-limited sharded write fails: %s", ok ? "(ok)" : err.msg);
    EXPECT(count_dir_entries(dir, NULL) == 0, "no file left after a failed sharded write (%d)", count_dir_entries(dir, NULL));
    rm_dir_files(dir);
    rmdir(dir);
}

int main(void) {
    const char *root = getenv("S2D_ROOT");
    path_join(g_fixtures, sizeof g_fixtures, root ? root : ".", "tests/fixtures/safetensors");
    const char *tmp = getenv("S2D_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/s2d_st_XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(g_tmp), "mkdtemp %s failed", g_tmp);

    RUN_TEST(test_bf16_closed_form);
    RUN_TEST(test_f16_closed_form);
    RUN_TEST(test_read_torch_fixture);
    RUN_TEST(test_writer_matches_reference);
    RUN_TEST(test_read_torch_sharded);
    RUN_TEST(test_round_trip);
    RUN_TEST(test_sharded_round_trip);
    RUN_TEST(test_malformed);
    RUN_TEST(test_failed_writes_leave_no_file);

    char sub[4096];
    const char *subs[] = {"sharded", "idx", "fail", "single"};
    for (size_t i = 0; i < S2D_ARRAY_LEN(subs); i++) {
        path_join(sub, sizeof sub, g_tmp, subs[i]);
        rm_dir_files(sub);
        rmdir(sub);
    }
    rm_dir_files(g_tmp);
    rmdir(g_tmp);
    return TEST_SUMMARY();
}
