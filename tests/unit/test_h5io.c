/* test_h5io: HDF5 checkpoints (fp32 / bf16 round trips, optimizer state, scalars, RNG, cursors, config),
 * the newest-checkpoint finder (temp and incomplete files ignored), damaged files, rollout logs and metrics.
 * Extra mode for tests/cli/test_export.sh:
 *     test_h5io --write-checkpoint FILE MODEL_DIR
 * writes FILE (models "policy" = MODEL_DIR in f32 with AdamW state, "teacher" = MODEL_DIR in bf16),
 * FILE.rollouts.h5 and FILE.metrics.h5 from the closed-form inputs below (the CLI test recomputes them). */
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "algo/optim.h"
#include "core/half.h"
#include "io/h5io.h"
#include "io/h5io_internal.h"
#include "model/model.h"
#include "model/model_ckpt.h"
#include "test.h"

static char g_tmp[4096];

static void tmp_path(char *out, size_t n, const char *name) { path_join(out, n, g_tmp, name); }

/* Known, non-trivial optimizer state: m[i] = sin(i), v[i] = (i % 13) / 7, step 7. */
static void fill_optim(adamw *opt, const model *m) {
    adamw_hparams hp = {.beta1 = 0.8f, .beta2 = 0.95f, .eps = 1e-6f, .weight_decay = 0.1f};
    adamw_init(opt, m->n_params, &hp);
    adamw_decay_segments_from_model(opt, m, false, false);
    for (size_t i = 0; i < m->n_params; i++) {
        opt->m[i] = sinf((float)i);
        opt->v[i] = (float)(i % 13) / 7.0f;
    }
    opt->step = 7;
}

static bool save_tiny(const char *path, model *m, adamw *opt, bool bf16, int stage, long step) {
    uint64_t rng[4] = {0xDEADBEEFCAFEF00DULL, 3, 123456789012345ULL, 2};
    uint64_t cursor[3] = {42, 1, 17};
    uint64_t labels[2] = {128, (uint64_t)-5}; /* a negative value, stored as its bits */
    ckpt_model mods[1];
    ckpt_optim ov = {0};
    model_ckpt_view("policy", m, bf16, &mods[0]);
    if (opt) adamw_ckpt_view(opt, &ov), mods[0].opt = &ov;
    ckpt_u64 st[] = {{.key = "rng.generator", .values = rng, .n = 4},
                     {.key = "cursor.arith_train", .values = cursor, .n = 3},
                     {.key = "labels.teacher_rl", .values = labels, .n = 2}};
    ckpt_text tx[] = {{.key = "note", .text = "named models: policy"}};
    ckpt_state s = {.stage_index = stage, .stage_name = "bridge_opd", .step = step,
                    .config_text = "run: demo\nstages:\n  - name: bridge_opd\n", .models = mods, .n_models = 1,
                    .u64s = st, .n_u64s = 3, .texts = tx, .n_texts = 1};
    s2d_err err = {0};
    bool ok = ckpt_save(path, &s, &err);
    if (!ok) fprintf(stderr, "%s\n", err.msg);
    model_ckpt_view_free(&mods[0]);
    adamw_ckpt_view_free(&ov);
    return ok;
}

/* m = a random model of preset (e.g. "llama-tiny"). */
static void preset_model(model *m, const char *preset, uint64_t seed) {
    model_config cfg;
    s2d_err err = {0};
    CHECK_OK(model_config_preset(preset, &cfg, &err), &err);
    model_create(m, &cfg);
    model_init_random(m, seed);
}

static void round_trip(bool bf16) {
    s2d_err err = {0};
    model m;
    preset_model(&m, "qwen3-tiny", 11);
    adamw opt;
    fill_optim(&opt, &m);
    char path[4200];
    tmp_path(path, sizeof path, bf16 ? "rt-bf16.h5" : "rt-f32.h5");
    EXPECT(save_tiny(path, &m, &opt, bf16, 2, 40), "save");
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    EXPECT(access(tmp, F_OK) != 0, "temp file renamed away");

    ckpt_state s;
    EXPECT(ckpt_load(path, &model_ckpt_binding, &s, &err), "load: %s", err.msg);
    EXPECT(s.stage_index == 2 && s.step == 40, "stage %d step %ld", s.stage_index, s.step);
    EXPECT_STREQ(s.stage_name, "bridge_opd");
    EXPECT_STREQ(s.config_text, "run: demo\nstages:\n  - name: bridge_opd\n");
    EXPECT_STREQ(ckpt_find_text(&s, "note"), "named models: policy");
    const ckpt_u64 *rng = ckpt_find_u64(&s, "rng.generator"), *cur = ckpt_find_u64(&s, "cursor.arith_train"),
                   *lab = ckpt_find_u64(&s, "labels.teacher_rl");
    EXPECT(rng && rng->n == 4 && rng->values[0] == 0xDEADBEEFCAFEF00DULL && rng->values[2] == 123456789012345ULL,
           "rng state");
    EXPECT(cur && cur->n == 3 && cur->values[0] == 42 && cur->values[1] == 1 && cur->values[2] == 17, "cursor");
    EXPECT(lab && lab->n == 2 && lab->values[0] == 128 && (int64_t)lab->values[1] == -5, "labels");
    EXPECT(ckpt_find_u64(&s, "nothing") == NULL, "absent key");
    ckpt_model *cm = ckpt_find_model(&s, "policy");
    const model *lm = cm ? cm->object : NULL;
    EXPECT(lm && cm->bf16 == bf16, "policy model loaded");
    if (lm) {
        EXPECT(memcmp(&lm->cfg, &m.cfg, sizeof m.cfg) == 0, "model config round trip");
        EXPECT(lm->n_params == m.n_params && cm->n_params == m.n_params && cm->params == lm->params, "n_params");
        size_t bad = 0;
        for (size_t i = 0; i < m.n_params; i++) {
            float want = bf16 ? bf16_to_f32(f32_to_bf16(m.params[i])) : m.params[i];
            if (memcmp(&lm->params[i], &want, 4) != 0) bad++;
        }
        EXPECT(bad == 0, "%zu parameters differ", bad);
        EXPECT(cm->opt, "optimizer loaded");
        if (cm->opt) {
            EXPECT(cm->opt->step == 7 && cm->opt->beta1 == 0.8f && cm->opt->beta2 == 0.95f &&
                       cm->opt->eps == 1e-6f && cm->opt->weight_decay == 0.1f && cm->opt->n == m.n_params,
                   "optimizer step and hyper-parameters");
            EXPECT(memcmp(cm->opt->m, opt.m, m.n_params * 4) == 0 && memcmp(cm->opt->v, opt.v, m.n_params * 4) == 0,
                   "moments bitwise equal");
            EXPECT(cm->opt->n_segments == opt.n_segments, "segments %d vs %d", cm->opt->n_segments, opt.n_segments);
            for (int i = 0; i < opt.n_segments && i < cm->opt->n_segments; i++)
                EXPECT(cm->opt->segments[i].offset == opt.segments[i].offset &&
                           cm->opt->segments[i].numel == opt.segments[i].numel &&
                           cm->opt->segments[i].decay == opt.segments[i].decay,
                       "segment %d", i);
        }
    }
    ckpt_state_free(&s);

    /* a ZeRO-1 shard reads its slice */
    float ms[10], vs[10];
    long step = 0;
    EXPECT(ckpt_read_optim_range(path, "policy", 100, 10, ms, vs, &step, &err), "range: %s", err.msg);
    EXPECT(step == 7 && memcmp(ms, opt.m + 100, sizeof ms) == 0 && memcmp(vs, opt.v + 100, sizeof vs) == 0, "slice");
    EXPECT(!ckpt_read_optim_range(path, "policy", m.n_params - 5, 10, ms, vs, &step, &err) &&
               strstr(err.msg, "outside"),
           "range past the end: %s", err.msg);

    /* on disk: the tensor dataset type matches the dtype (checked with the HDF5 API directly) */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "/models/policy/model.embed_tokens.weight", H5P_DEFAULT);
    hid_t t = H5Dget_type(d);
    EXPECT(bf16 ? (H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 2) : (H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4),
           "stored dataset type");
    EXPECT(H5Aexists(d, "dtype") == (bf16 ? 1 : 0), "dtype attribute only on bf16");
    H5Tclose(t);
    H5Dclose(d);
    H5Fclose(f);

    model m2;
    bool was_bf16 = !bf16;
    EXPECT(model_ckpt_load(path, "policy", &m2, &was_bf16, &err), "load one model: %s", err.msg);
    EXPECT(was_bf16 == bf16 && m2.n_params == m.n_params, "load one model");
    model_free(&m2);
    EXPECT(!model_ckpt_load(path, "student", &m2, NULL, &err) && strstr(err.msg, path) && strstr(err.msg, "policy"),
           "missing model names file and lists models: %s", err.msg);
    model_free(&m);
    adamw_free(&opt);
}

static void test_round_trip_f32(void) { round_trip(false); }
static void test_round_trip_bf16(void) { round_trip(true); }

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp, "cannot write %s", path);
    fputs(text, fp);
    fclose(fp);
}

static void test_find_latest_and_damage(void) {
    char dir[4200], path[4300], p2[4300];
    tmp_path(dir, sizeof dir, "ckdir");
    CHECK(mkdir(dir, 0755) == 0, "mkdir");
    bool found = true;
    s2d_err err = {0};
    EXPECT(ckpt_find_latest(dir, path, sizeof path, &found, &err) && !found, "empty dir: none");
    model m;
    preset_model(&m, "llama-tiny", 3);
    ckpt_path(path, sizeof path, dir, 0, 10);
    EXPECT(save_tiny(path, &m, NULL, false, 0, 10), "save 0/10");
    ckpt_path(path, sizeof path, dir, 1, 5);
    EXPECT(save_tiny(path, &m, NULL, false, 1, 5), "save 1/5");
    /* newer by name but never completed: format attributes, no `complete` */
    ckpt_path(p2, sizeof p2, dir, 1, 9);
    hid_t f = H5Fcreate(p2, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, strlen(H5_CKPT_FORMAT));
    hid_t a = H5Acreate2(f, "format", st, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, st, H5_CKPT_FORMAT);
    H5Aclose(a);
    int64_t one = 1;
    a = H5Acreate2(f, "format_version", H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &one);
    H5Aclose(a);
    H5Tclose(st);
    H5Sclose(sp);
    H5Fclose(f);
    /* a temp file of a newer checkpoint (a complete copy, but under a temp name) and a garbage file */
    char tmpname[4400], junk[4400], cmd[9000];
    snprintf(tmpname, sizeof tmpname, "%s/ckpt-02-000000001.h5.tmp.4242", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, tmpname);
    CHECK(system(cmd) == 0, "cp");
    snprintf(junk, sizeof junk, "%s/ckpt-03-000000001.h5", dir);
    write_text(junk, "not hdf5 at all\n");

    char latest[4300];
    EXPECT(ckpt_find_latest(dir, latest, sizeof latest, &found, &err) && found, "found: %s", err.msg);
    EXPECT_STREQ(latest, path);

    ckpt_state s;
    EXPECT(!ckpt_load(p2, &model_ckpt_binding, &s, &err) && strstr(err.msg, p2) && strstr(err.msg, "incomplete"), "incomplete: %s", err.msg);
    EXPECT(!ckpt_load(junk, &model_ckpt_binding, &s, &err) && strstr(err.msg, junk) && strstr(err.msg, "not an HDF5 file"), "junk: %s",
           err.msg);
    char missing[4400];
    snprintf(missing, sizeof missing, "%s/nope.h5", dir);
    EXPECT(!ckpt_load(missing, &model_ckpt_binding, &s, &err) && strstr(err.msg, missing) && strstr(err.msg, "cannot read"), "missing: %s",
           err.msg);
    /* truncated: keep the first half of a complete checkpoint */
    char trunc[4400];
    snprintf(trunc, sizeof trunc, "%s/truncated.h5", dir);
    FILE *in = fopen(path, "rb");
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    char *buf = xmalloc((size_t)size);
    CHECK(fread(buf, 1, (size_t)size, in) == (size_t)size, "read");
    fclose(in);
    FILE *out = fopen(trunc, "wb");
    fwrite(buf, 1, (size_t)size / 2, out);
    fclose(out);
    free(buf);
    EXPECT(!ckpt_load(trunc, &model_ckpt_binding, &s, &err) && strstr(err.msg, trunc), "truncated names the file: %s", err.msg);
    /* a tensor with the wrong shape is named */
    char bad[4400];
    snprintf(bad, sizeof bad, "%s/badshape.h5", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, bad);
    CHECK(system(cmd) == 0, "cp");
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/models/policy/model.norm.weight", H5P_DEFAULT);
    hsize_t three = 3;
    sp = H5Screate_simple(1, &three, NULL);
    hid_t d = H5Dcreate2(f, "/models/policy/model.norm.weight", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    float v3[3] = {1, 2, 3};
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v3);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
    EXPECT(!ckpt_load(bad, &model_ckpt_binding, &s, &err) && strstr(err.msg, bad) && strstr(err.msg, "/models/policy/model.norm.weight") &&
               strstr(err.msg, "shape"),
           "bad shape: %s", err.msg);
    /* bad names are refused at save time */
    ckpt_model mods[1];
    model_ckpt_view("a/b", &m, false, &mods[0]);
    ckpt_state bs = {.models = mods, .n_models = 1};
    snprintf(bad, sizeof bad, "%s/badname.h5", dir);
    EXPECT(!ckpt_save(bad, &bs, &err) && strstr(err.msg, "a/b"), "bad model name: %s", err.msg);
    model_ckpt_view_free(&mods[0]);
    EXPECT(access(bad, F_OK) != 0, "no file after a failed save");
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c 'badname.h5.tmp' > /dev/null", dir);
    EXPECT(system(cmd) != 0, "no temp file left after a failed save");
    model_free(&m);
}

/* ---- the seal (h5io_seal.c): a damaged byte outside tensor data is refused before libhdf5 parses it ---- */
static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void flip_at(int fd, uint64_t off) {
    unsigned char b;
    CHECK(pread(fd, &b, 1, (off_t)off) == 1, "pread");
    b ^= 0x10;
    CHECK(pwrite(fd, &b, 1, (off_t)off) == 1, "pwrite");
}
static void test_seal(void) {
    s2d_err err = {0};
    model m;
    preset_model(&m, "llama-tiny", 5);
    char path[4200];
    tmp_path(path, sizeof path, "seal.h5");
    CHECK(save_tiny(path, &m, NULL, false, 1, 3), "save");
    model_free(&m);
    EXPECT(h5_seal_check(path, &err) == 1, "intact file: sealed and intact (%s)", err.msg);
    struct stat st;
    CHECK(stat(path, &st) == 0, "stat");
    uint64_t size = (uint64_t)st.st_size;
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0, "open");
    unsigned char foot[56];
    CHECK(pread(fd, foot, 56, (off_t)(size - 56)) == 56, "read footer");
    EXPECT(memcmp(foot, "S2DSEAL1", 8) == 0 && memcmp(foot + 48, "S2DSEAL1", 8) == 0, "footer magic at both ends");
    uint64_t body_len = le64(foot + 8), end = le64(foot + 32);
    EXPECT(end + body_len + 56 == size, "footer: HDF5 end + body + footer = file size");
    unsigned char *body = xmalloc((size_t)body_len);
    CHECK(pread(fd, body, (size_t)body_len, (off_t)end) == (ssize_t)body_len, "read body");
    size_t n = (size_t)le64(body);
    EXPECT(n >= 10, "the ranges cover the datasets (%zu)", n);
    /* every 5th byte of HDF5 structure, every 997th of tensor data, every byte of the seal */
    int structure_refused = 0, structure_seen = 0, data_seen = 0, seal_refused = 0;
    size_t ri = 0;
    for (uint64_t off = 0; off < size; off++) {
        while (ri < n && off >= le64(body + 8 + 16 * ri) + le64(body + 16 + 16 * ri)) ri++;
        bool in_data = ri < n && off >= le64(body + 8 + 16 * ri);
        if (off < end && off % (in_data ? 997 : 5) != 0) continue;
        flip_at(fd, off);
        err.msg[0] = 0;
        int sealed = h5_seal_check(path, &err);
        if (off >= end) seal_refused += sealed < 0 && strstr(err.msg, path) && strstr(err.msg, "seal");
        else if (in_data) {
            data_seen++;
            ckpt_state s;
            bool loaded = sealed == 1 && ckpt_load(path, &model_ckpt_binding, &s, &err);
            if (loaded) ckpt_state_free(&s);
            EXPECT(sealed == 1 && (loaded || (strstr(err.msg, path) && strstr(err.msg, "corrupted"))),
                   "tensor byte %llu: seal passes, the dataset check names it (%d: %s)", (unsigned long long)off, sealed, err.msg);
        } else {
            structure_seen++;
            structure_refused += sealed < 0 && strstr(err.msg, path) && strstr(err.msg, "HDF5 structure");
        }
        flip_at(fd, off);
    }
    EXPECT(structure_seen > 1000 && structure_refused == structure_seen, "every structure flip refused by the seal (%d of %d)",
           structure_refused, structure_seen);
    EXPECT(data_seen > 50, "tensor bytes tried (%d)", data_seen);
    EXPECT(seal_refused == (int)(size - end), "every seal byte flip refused (%d of %llu)", seal_refused, (unsigned long long)(size - end));
    EXPECT(h5_seal_check(path, &err) == 1, "restored: intact again");
    /* one byte appended: the footer no longer ends the file */
    CHECK(pwrite(fd, "x", 1, (off_t)size) == 1, "append");
    EXPECT(h5_seal_check(path, &err) == 0, "appended byte: no seal at the end (HDF5 decides)");
    /* cut back to the HDF5 bytes: a file from before seals loads unchecked by the seal */
    CHECK(ftruncate(fd, (off_t)end) == 0, "truncate");
    EXPECT(h5_seal_check(path, &err) == 0, "unsealed file: 0");
    ckpt_state s;
    bool loaded = ckpt_load(path, &model_ckpt_binding, &s, &err);
    EXPECT(loaded, "unsealed file still loads: %s", err.msg);
    if (loaded) ckpt_state_free(&s);
    close(fd);
    free(body);
}

/* ---- rollout log and metrics: closed-form inputs (the CLI test recomputes the same in python) ----
 * step k (k = 0, 1, 2) has k + 2 sequences; sequence j of step k has length 3 + j + k,
 * token t of it = (100 * k + 10 * j + t) % 512, prompt_len = 2, reward = (j % 2), advantage = j - 0.5,
 * behaviour log-prob of token t = -0.01 * (t + 1) - k; teacher log-probs only on odd steps = -0.5 * t;
 * reference never. stage = k < 2 ? 0 : 1, step = 10 + k, policy version = k. */
static rollout_log *write_rollout_steps(rollout_log *log, int k0, int k1, s2d_err *err) {
    for (int k = k0; k < k1 && log; k++) {
        int S = k + 2;
        int32_t offs[8], toks[256], plen[8];
        float rew[8], adv[8], beh[256], tea[256];
        offs[0] = 0;
        for (int j = 0; j < S; j++) {
            int len = 3 + j + k;
            for (int t = 0; t < len; t++) {
                int at = offs[j] + t;
                toks[at] = (100 * k + 10 * j + t) % 512;
                beh[at] = -0.01f * (float)(t + 1) - (float)k;
                tea[at] = -0.5f * (float)t;
            }
            offs[j + 1] = offs[j] + len;
            plen[j] = 2;
            rew[j] = (float)(j % 2);
            adv[j] = (float)j - 0.5f;
        }
        rollout_step st = {.stage = k < 2 ? 0 : 1, .step = 10 + k, .policy_version = k, .n_seqs = S, .offsets = offs,
                           .tokens = toks, .prompt_len = plen, .reward = rew, .advantage = adv,
                           .logp_behaviour = beh, .logp_teacher = (k % 2) ? tea : NULL};
        if (!rollout_log_append(log, &st, err)) return NULL;
    }
    return log;
}

static bool write_logs(const char *base, s2d_err *err) {
    char path[4400];
    snprintf(path, sizeof path, "%s.rollouts.h5", base);
    rollout_log *log = rollout_log_open(path, err);
    if (!log || !write_rollout_steps(log, 0, 2, err) || !rollout_log_close(log, err)) return false;
    log = rollout_log_open(path, err); /* reopen and append */
    if (!log || !write_rollout_steps(log, 2, 3, err) || !rollout_log_close(log, err)) return false;
    snprintf(path, sizeof path, "%s.metrics.h5", base);
    const char *fields[] = {"loss", "reward_mean"};
    metrics_log *ml = metrics_log_open(path, fields, 2, err);
    for (int k = 0; k < 2 && ml; k++) {
        double v[2] = {1.0 / (k + 1), 0.25 * k};
        if (!metrics_log_append(ml, 0, 10 + k, v, err)) return false;
    }
    if (!ml || !metrics_log_close(ml, err)) return false;
    ml = metrics_log_open(path, fields, 2, err);
    double v[2] = {1.0 / 3, 0.5};
    return ml && metrics_log_append(ml, 1, 12, v, err) && metrics_log_close(ml, err);
}

static void test_rollout_and_metrics(void) {
    char base[4200], path[4400];
    tmp_path(base, sizeof base, "logs");
    s2d_err err = {0};
    EXPECT(write_logs(base, &err), "write logs: %s", err.msg);
    snprintf(path, sizeof path, "%s.rollouts.h5", base);
    int64_t *offs = NULL, *steps = NULL, *seq_begin = NULL;
    float *beh = NULL, *tea = NULL, *ref = NULL, *rew = NULL;
    int64_t *toks = NULL;
    size_t n_off = 0, n_tok = 0, n_beh = 0, n_tea = 0, n_ref = 0, n_rew = 0, n_steps = 0, n_sb = 0;
    EXPECT(h5_read_i64(path, "seqs/offsets", &offs, &n_off, &err) && h5_read_i64(path, "tokens", &toks, &n_tok, &err) &&
               h5_read_f32(path, "logp/behaviour", &beh, &n_beh, &err) &&
               h5_read_f32(path, "logp/teacher", &tea, &n_tea, &err) &&
               h5_read_f32(path, "logp/reference", &ref, &n_ref, &err) &&
               h5_read_f32(path, "seqs/reward", &rew, &n_rew, &err) && h5_read_i64(path, "steps/step", &steps, &n_steps, &err) &&
               h5_read_i64(path, "steps/seq_begin", &seq_begin, &n_sb, &err),
           "read back: %s", err.msg);
    /* 2 + 3 + 4 sequences; lengths 3..: step k seq j has 3 + j + k */
    EXPECT(n_steps == 3 && n_rew == 9 && n_off == 10, "counts %zu %zu %zu", n_steps, n_rew, n_off);
    size_t seq = 0, bad = 0;
    for (int k = 0; k < 3 && n_off == 10; k++) {
        EXPECT(steps[k] == 10 + k && seq_begin[k] == (int64_t)seq, "step row %d", k);
        for (int j = 0; j < k + 2; j++, seq++) {
            int64_t len = offs[seq + 1] - offs[seq];
            if (len != 3 + j + k) bad++;
            for (int t = 0; t < len; t++) {
                int64_t at = offs[seq] + t;
                if (toks[at] != (100 * k + 10 * j + t) % 512) bad++;
                if (beh[at] != -0.01f * (float)(t + 1) - (float)k) bad++;
                if ((k % 2) ? tea[at] != -0.5f * (float)t : !isnan(tea[at])) bad++;
                if (!isnan(ref[at])) bad++;
            }
            if (rew[seq] != (float)(j % 2)) bad++;
        }
    }
    EXPECT(bad == 0 && n_tok == (size_t)offs[n_off - 1] && n_beh == n_tok && n_tea == n_tok && n_ref == n_tok,
           "%zu mismatches in the rollout log", bad);
    free(offs), free(toks), free(beh), free(tea), free(ref), free(rew), free(steps), free(seq_begin);

    char *format = NULL;
    EXPECT(h5_file_format(path, &format, &err) && strcmp(format, H5_ROLLOUT_FORMAT) == 0, "format");
    free(format);
    EXPECT(!ckpt_load(path, &model_ckpt_binding, &(ckpt_state){0}, &err) && strstr(err.msg, "not an s2d checkpoint"), "rollouts are no checkpoint: %s", err.msg);

    snprintf(path, sizeof path, "%s.metrics.h5", base);
    double *loss = NULL;
    int64_t *mstep = NULL;
    size_t nl = 0, ns = 0;
    EXPECT(h5_read_f64(path, "loss", &loss, &nl, &err) && h5_read_i64(path, "step", &mstep, &ns, &err), "metrics: %s", err.msg);
    EXPECT(nl == 3 && ns == 3 && loss[2] == 1.0 / 3 && loss[0] == 1.0 && mstep[2] == 12, "metric rows");
    free(loss), free(mstep);
    const char *other[] = {"loss"};
    EXPECT(!metrics_log_open(path, other, 1, &err) && strstr(err.msg, path) && strstr(err.msg, "fields"),
           "field mismatch: %s", err.msg);
    char ckpt[4400];
    snprintf(ckpt, sizeof ckpt, "%s.rollouts.h5", base);
    EXPECT(!metrics_log_open(ckpt, other, 1, &err) && strstr(err.msg, "not an s2d metrics"), "wrong kind: %s", err.msg);
}

/* Extra columns (a reward command's reward/<name>): created when a name first appears and back-filled with
 * NaN, NaN where a row lacks it, kept on reopen, escaped names, and copied (first rows) into a cut table. */
static void test_metrics_extras(void) {
    char path[4400], cut[4400];
    tmp_path(path, sizeof path, "extras.metrics.h5");
    tmp_path(cut, sizeof cut, "extras.cut.h5");
    s2d_err err = {0};
    const char *fields[] = {"loss"};
    metrics_log *ml = metrics_log_open(path, fields, 1, &err);
    double v = 1;
    const char *n1[] = {"chars"}, *n2[] = {"long", "a/b%", "chars"};
    const double x1[] = {5}, x2[] = {0.5, 7, 6};
    bool ok = ml && metrics_log_append(ml, 0, 1, &v, &err) &&             /* row 0: no extras */
              metrics_log_append_extras(ml, 0, 2, &v, n1, x1, 1, &err) && /* row 1: chars */
              metrics_log_close(ml, &err);
    ml = ok ? metrics_log_open(path, fields, 1, &err) : NULL; /* reopen: the extra column is found again */
    ok = ml && metrics_log_append_extras(ml, 0, 3, &v, n2, x2, 3, &err) && /* row 2: long, a/b%, chars */
         metrics_log_append(ml, 1, 1, &v, &err) && metrics_log_close(ml, &err);   /* row 3: none */
    EXPECT(ok, "write: %s", err.msg);
    double *c = NULL, *l = NULL, *e = NULL;
    size_t nc = 0, nl = 0, ne = 0;
    EXPECT(h5_read_f64(path, "reward/chars", &c, &nc, &err) && h5_read_f64(path, "reward/long", &l, &nl, &err) &&
               h5_read_f64(path, "reward/a%2Fb%25", &e, &ne, &err),
           "read: %s", err.msg);
    EXPECT(nc == 4 && isnan(c[0]) && c[1] == 5 && c[2] == 6 && isnan(c[3]), "reward/chars: NaN, 5, 6, NaN");
    EXPECT(nl == 4 && isnan(l[0]) && isnan(l[1]) && l[2] == 0.5 && isnan(l[3]), "reward/long back-filled");
    EXPECT(ne == 4 && e[2] == 7, "a/b%% escaped as a%%2Fb%%25");
    free(c), free(l), free(e);
    /* a cut table: the fixed columns by the caller, the extras copied */
    ml = metrics_log_open(cut, fields, 1, &err);
    ok = ml && metrics_log_append(ml, 0, 1, &v, &err) && metrics_log_append(ml, 0, 2, &v, &err) &&
         metrics_log_close(ml, &err) && metrics_log_copy_extras(path, cut, 2, &err);
    EXPECT(ok, "cut: %s", err.msg);
    c = NULL, nc = 0;
    EXPECT(h5_read_f64(cut, "reward/chars", &c, &nc, &err) && nc == 2 && isnan(c[0]) && c[1] == 5,
           "the cut keeps the first 2 rows of reward/chars (%zu)", nc);
    free(c);
    ml = metrics_log_open(cut, fields, 1, &err);
    EXPECT(ml && metrics_log_close(ml, &err), "the cut table reopens: %s", err.msg);
    EXPECT(!metrics_log_copy_extras(path, cut, 9, &err) && strstr(err.msg, "fewer than 9"), "cut past the end: %s",
           err.msg);
}

/* --write-checkpoint FILE MODEL_DIR (for tests/cli/test_export.sh) */
static int write_checkpoint_mode(const char *file, const char *dir) {
    s2d_err err = {0};
    model m;
    CHECK_OK(model_load(&m, dir, &err), &err);
    adamw opt;
    fill_optim(&opt, &m);
    uint64_t cursor[3] = {42, 1, 17};
    ckpt_model mods[2];
    ckpt_optim ov;
    model_ckpt_view("policy", &m, false, &mods[0]);
    model_ckpt_view("teacher", &m, true, &mods[1]);
    adamw_ckpt_view(&opt, &ov);
    mods[0].opt = &ov;
    ckpt_u64 st[] = {{.key = "cursor.arith_train", .values = cursor, .n = 3}};
    ckpt_state s = {.stage_index = 3, .stage_name = "student_rl", .step = 25,
                    .config_text = "pipeline: cli-test\nseed: 9\n", .models = mods, .n_models = 2, .u64s = st,
                    .n_u64s = 1};
    CHECK_OK(ckpt_save(file, &s, &err), &err);
    CHECK_OK(write_logs(file, &err), &err);
    model_ckpt_view_free(&mods[0]);
    model_ckpt_view_free(&mods[1]);
    adamw_ckpt_view_free(&ov);
    model_free(&m);
    adamw_free(&opt);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "--write-checkpoint") == 0) return write_checkpoint_mode(argv[2], argv[3]);
    snprintf(g_tmp, sizeof g_tmp, "%s/s2d-test-h5io.XXXXXX", getenv("S2D_TMP") ? getenv("S2D_TMP") : "/tmp");
    CHECK(mkdtemp(g_tmp), "mkdtemp failed");
    RUN_TEST(test_round_trip_f32);
    RUN_TEST(test_round_trip_bf16);
    RUN_TEST(test_find_latest_and_damage);
    RUN_TEST(test_seal);
    RUN_TEST(test_rollout_and_metrics);
    RUN_TEST(test_metrics_extras);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return TEST_SUMMARY();
}
