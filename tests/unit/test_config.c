/* Config: loading with positions, typed getters and their errors, unknown keys, duplicates, YAML syntax
 * errors (positions cross-checked with PyYAML, which reports the same marks as libyaml), overrides, and
 * the write/reload round trip. Fixtures: tests/fixtures/config/. */
#include <stdlib.h>
#include <unistd.h>

#include "core/config.h"
#include "test.h"

#define FIX "tests/fixtures/config/"

static bool contains(const char *s, const char *sub) { return s && sub && strstr(s, sub) != NULL; }
#define EXPECT_HAS(msg, sub) EXPECT(contains((msg), (sub)), "message \"%s\" lacks \"%s\"", (msg), (sub))

static cfg_node *load_str(const char *text) {
    s2d_err err;
    cfg_node *root = NULL;
    if (!cfg_load_string(text, "t.yaml", &root, &err)) {
        fprintf(stderr, "unexpected load failure: %s\n", err.msg);
        return NULL;
    }
    return root;
}

static void test_load_and_read(void) {
    s2d_err err;
    cfg_node *root;
    EXPECT(cfg_load_file(FIX "good.yaml", &root, &err), "load good.yaml: %s", err.msg);
    if (!root) return;
    const char *name, *note, *uni, *text, *tag;
    int seed;
    int64_t big;
    double lr, warmup;
    bool bf16;
    EXPECT(cfg_get_str(root, "name", &name, &err), "%s", err.msg);
    EXPECT_STREQ(name, "demo run");
    EXPECT(cfg_get_int(root, "seed", 0, 100000, &seed, &err) && seed == 1234, "seed %d", seed);
    EXPECT(cfg_get_i64(root, "big", INT64_MIN, INT64_MAX, &big, &err) && big == INT64_MIN, "big");
    EXPECT(cfg_get_double(root, "lr", 0, 1, &lr, &err) && lr == 3.0e-6, "lr %g", lr);
    EXPECT(cfg_get_double(root, "warmup", 0, 1, &warmup, &err) && warmup == 0.5, "warmup %g", warmup);
    EXPECT(cfg_get_bool(root, "use_bf16", &bf16, &err) && bf16, "use_bf16");
    EXPECT(cfg_get_str(root, "note", &note, &err), "%s", err.msg);
    EXPECT_STREQ(note, "it's fine");
    EXPECT(cfg_get_str(root, "unicode", &uni, &err), "%s", err.msg);
    EXPECT_STREQ(uni, "α→β ∑ 数学");
    EXPECT(cfg_get_str(root, "text", &text, &err), "%s", err.msg);
    EXPECT_STREQ(text, "line one\nline two\n");
    /* a quoted "3" is a string, never an integer */
    EXPECT(cfg_get_str(root, "tag", &tag, &err), "%s", err.msg);
    EXPECT_STREQ(tag, "3");
    int tag_int;
    EXPECT(!cfg_get_int(root, "tag", 0, 10, &tag_int, &err), "quoted 3 read as int");
    EXPECT_HAS(err.msg, "good.yaml:8:6: tag: expected an integer, got the quoted string '3'");
    /* empty value = null: optional getters give the default, required ones fail */
    int dflt;
    EXPECT(cfg_get_int_or(root, "empty", 7, 0, 10, &dflt, &err) && dflt == 7, "null → default");
    EXPECT(cfg_get_int_or(root, "absent", 9, 0, 10, &dflt, &err) && dflt == 9, "absent → default");
    cfg_node *defaults;
    EXPECT(cfg_get_map(root, "defaults", &defaults, &err), "%s", err.msg);
    float x;
    const char *kl;
    EXPECT(cfg_get_float(defaults, "clip_low", 0, 1, &x, &err) && x == 0.2f, "clip_low");
    EXPECT(cfg_get_float(defaults, "clip_high", 0, 1, &x, &err) && x == 0.28f, "clip_high");
    EXPECT(cfg_get_str(defaults, "kl", &kl, &err), "kl");

    cfg_node *pipe;
    EXPECT(cfg_get_seq(root, "pipeline", &pipe, &err) && cfg_len(pipe) == 3, "pipeline length");
    if (!pipe || cfg_len(pipe) != 3) return;
    /* stage 0: merge key, explicit clip_high wins */
    static const char *const stages[] = {"teacher_rl", "bridge_fkl", "bridge_opd", "student_rl"};
    static const char *const kls[] = {"k1", "k2", "k3"};
    float want_high[3] = {0.3f, 0.28f, 0.25f}, want_low[3] = {0.2f, 0.2f, 0.1f};
    int want_stage[3] = {0, 1, 3}, want_kl[3] = {2, 2, 0};
    for (int i = 0; i < 3; i++) {
        cfg_node *st = cfg_at(pipe, i), *algo;
        int stage, k;
        EXPECT(cfg_as_map(st, &err), "%s", err.msg);
        EXPECT(cfg_get_enum(st, "stage", stages, 4, &stage, &err) && stage == want_stage[i], "stage %d", i);
        EXPECT(cfg_get_map(st, "algo", &algo, &err), "%s", err.msg);
        EXPECT(cfg_get_float(algo, "clip_high", 0, 1, &x, &err) && x == want_high[i], "clip_high[%d] %g", i, x);
        EXPECT(cfg_get_float(algo, "clip_low", 0, 1, &x, &err) && x == want_low[i], "clip_low[%d]", i);
        EXPECT(cfg_get_enum(algo, "kl", kls, 3, &k, &err) && k == want_kl[i], "kl[%d]", i);
        char where[256];
        cfg_where(algo, where, sizeof where);
        if (i == 2) EXPECT_STREQ(where, FIX "good.yaml:25:7"); /* the map starts at its first key */
    }
    cfg_node *st2 = cfg_at(pipe, 2), *prompts;
    EXPECT(cfg_get_seq(st2, "prompts", &prompts, &err) && cfg_len(prompts) == 3, "prompts");
    for (int i = 0; i < cfg_len(prompts); i++) {
        int v;
        EXPECT(cfg_as_int(cfg_at(prompts, i), 1, 3, &v, &err) && v == i + 1, "prompts[%d]", i);
    }
    EXPECT_STREQ(cfg_path(cfg_at(prompts, 1)), "pipeline[2].prompts[1]");
    EXPECT(cfg_check_unused(root, &err), "everything was read, yet: %s", err.msg);
    cfg_free(root);
}

static void test_type_and_range_errors(void) {
    s2d_err err;
    cfg_node *root = load_str("a:\n  n: abc\n  f: 1.5x\n  big: 300\n  b: yes\n  e: adamw\n  m: [1]\n  neg: -0.5\n"
                              "  h: 0x10\n  nan: .nan\n  huge: 1e999\n  s: {x: 1}\n");
    if (!root) return;
    cfg_node *a;
    EXPECT(cfg_get_map(root, "a", &a, &err), "%s", err.msg);
    int i;
    double d;
    bool b;
    const char *s;
    EXPECT(!cfg_get_int(a, "n", 0, 10, &i, &err), "abc as int");
    EXPECT_STREQ(err.msg, "t.yaml:2:6: a.n: expected an integer, got 'abc'");
    EXPECT(!cfg_get_double(a, "f", 0, 10, &d, &err), "1.5x as float");
    EXPECT_STREQ(err.msg, "t.yaml:3:6: a.f: expected a number, got '1.5x'");
    EXPECT(!cfg_get_int(a, "big", 0, 255, &i, &err), "300 > 255");
    EXPECT_STREQ(err.msg, "t.yaml:4:8: a.big: 300 is out of range: must be in [0, 255]");
    EXPECT(!cfg_get_bool(a, "b", &b, &err), "yes as bool");
    EXPECT_HAS(err.msg, "t.yaml:5:6: a.b: expected true or false, got 'yes'");
    EXPECT_HAS(err.msg, "write true or false");
    static const char *const opts[] = {"adam", "sgd", "lion"};
    EXPECT(!cfg_get_enum(a, "e", opts, 3, &i, &err), "bad enum");
    EXPECT_STREQ(err.msg, "t.yaml:6:6: a.e: expected one of adam, sgd, lion; got 'adamw'");
    EXPECT(!cfg_get_int(a, "m", 0, 10, &i, &err), "seq as int");
    EXPECT_STREQ(err.msg, "t.yaml:7:6: a.m: expected an integer, got a sequence");
    EXPECT(!cfg_get_double(a, "neg", 0, 1, &d, &err), "-0.5 in [0,1]");
    EXPECT_HAS(err.msg, "t.yaml:8:8: a.neg: -0.5 is out of range: must be in [0, 1]");
    EXPECT(!cfg_get_int(a, "h", 0, 100, &i, &err), "hex is not an integer");
    EXPECT(!cfg_get_double(a, "nan", -1e9, 1e9, &d, &err), "nan is never in range");
    EXPECT(!cfg_get_double(a, "huge", 0, INFINITY, &d, &err), "1e999 overflows");
    EXPECT_HAS(err.msg, "overflows");
    EXPECT(!cfg_get_str(a, "s", &s, &err), "map as string");
    EXPECT_STREQ(err.msg, "t.yaml:12:6: a.s: expected a string, got a map");
    EXPECT(!cfg_get_int(a, "missing", 0, 1, &i, &err), "required key");
    EXPECT_STREQ(err.msg, "t.yaml:2:3: a: missing required key 'missing'");
    cfg_node *sub;
    EXPECT(!cfg_get_map(a, "n", &sub, &err), "scalar as map");
    EXPECT_STREQ(err.msg, "t.yaml:2:6: a.n: expected a map, got 'abc'");
    cfg_free(root);
}

/* `!!str 32` is a string (libyaml's document gives it the same tag as a plain 32: the source is looked at) */
static void test_str_tag(void) {
    s2d_err err;
    cfg_node *root = load_str("a: !!str 32\nb: &x !!str 7\nc: 32\nd: &y 5\ne: [!!str 1]\n");
    if (!root) return;
    int i;
    EXPECT(!cfg_get_int(root, "a", 0, 100, &i, &err), "!!str 32 is not an integer");
    EXPECT_HAS(err.msg, "t.yaml:1:4: a: expected an integer, got the quoted string '32'");
    EXPECT(!cfg_get_int(root, "b", 0, 100, &i, &err), "&x !!str 7 is not an integer");
    EXPECT(cfg_get_int(root, "c", 0, 100, &i, &err) && i == 32, "plain 32: %s", err.msg);
    EXPECT(cfg_get_int(root, "d", 0, 100, &i, &err) && i == 5, "anchored plain 5: %s", err.msg);
    const char *s;
    EXPECT(cfg_get_str(root, "a", &s, &err) && strcmp(s, "32") == 0, "!!str 32 as a string: %s", err.msg);
    cfg_node *e = cfg_find(root, "e");
    EXPECT(e && e->n == 1 && e->items[0]->quoted, "!!str in a flow sequence");
    cfg_free(root);
}

static void test_unknown_key(void) {
    s2d_err err;
    cfg_node *root;
    EXPECT(cfg_load_file(FIX "unknown_key.yaml", &root, &err), "%s", err.msg);
    if (!root) return;
    int seed;
    cfg_node *pipe;
    EXPECT(cfg_get_int(root, "seed", 0, 10, &seed, &err), "%s", err.msg);
    EXPECT(cfg_get_seq(root, "pipeline", &pipe, &err), "%s", err.msg);
    for (int i = 0; i < cfg_len(pipe); i++) {
        cfg_node *st = cfg_at(pipe, i), *algo;
        const char *name;
        double lo, hi;
        EXPECT(cfg_get_str(st, "stage", &name, &err), "%s", err.msg);
        EXPECT(cfg_get_map(st, "algo", &algo, &err), "%s", err.msg);
        EXPECT(cfg_get_double(algo, "clip_low", 0, 1, &lo, &err), "%s", err.msg);
        EXPECT(cfg_get_double_or(algo, "clip_high", 0.28, 0, 1, &hi, &err) && hi == 0.28, "default");
    }
    EXPECT(!cfg_check_unused(root, &err), "the typo must be reported");
    EXPECT_STREQ(err.msg, FIX "unknown_key.yaml:9:7: unknown key 'clip_hgih' at pipeline[1].algo.clip_hgih "
                              "(did you mean 'clip_high'?)");
    cfg_free(root);

    /* far from every known key: no suggestion; an unread top-level section is reported as a whole */
    root = load_str("seed: 1\nzzz_section:\n  a: 1\n");
    EXPECT(cfg_get_int(root, "seed", 0, 10, &seed, &err), "%s", err.msg);
    EXPECT(!cfg_check_unused(root, &err), "unread section");
    EXPECT_STREQ(err.msg, "t.yaml:2:1: unknown key 'zzz_section' at zzz_section");
    cfg_free(root);
}

static void test_duplicate_and_syntax(void) {
    s2d_err err;
    cfg_node *root = NULL;
    EXPECT(!cfg_load_file(FIX "duplicate_key.yaml", &root, &err), "duplicate key accepted");
    EXPECT_STREQ(err.msg, FIX "duplicate_key.yaml:4:3: duplicate key 'name' at model.name (first defined at line 2, "
                              "column 3)");
    /* PyYAML (a port of the libyaml parser) on bad_syntax.yaml: "while parsing a flow sequence in <file>,
     * line 3, column 11: expected ',' or ']', but got ':' in <file>, line 4, column 8" */
    EXPECT(!cfg_load_file(FIX "bad_syntax.yaml", &root, &err), "bad syntax accepted");
    EXPECT_STREQ(err.msg, FIX "bad_syntax.yaml:4:8: YAML syntax error: did not find expected ',' or ']' (while "
                              "parsing a flow sequence, at line 3, column 11)");
    EXPECT(!cfg_load_string("a: 1\n b: 2\n", "t.yaml", &root, &err), "bad indentation");
    EXPECT_HAS(err.msg, "t.yaml:2:3: YAML syntax error: mapping values are not allowed in this context");
    EXPECT(!cfg_load_string("- 1\n- 2\n", "t.yaml", &root, &err), "root must be a map");
    EXPECT_HAS(err.msg, "t.yaml:1:1: (root): the top level of a config must be a map");
    EXPECT(!cfg_load_string("a: *nope\n", "t.yaml", &root, &err), "undefined alias");
    EXPECT_HAS(err.msg, "found undefined alias");
    EXPECT(!cfg_load_string("a: 1\n---\nb: 2\n", "t.yaml", &root, &err), "two documents");
    EXPECT_HAS(err.msg, "t.yaml:3:1: a second YAML document");
    EXPECT(!cfg_load_string("a: !!int 3\n", "t.yaml", &root, &err), "explicit tags");
    EXPECT_HAS(err.msg, "unsupported YAML tag");
    EXPECT(!cfg_load_string("[a]: 1\n", "t.yaml", &root, &err), "sequence key");
    EXPECT_HAS(err.msg, "map keys must be scalars");
    EXPECT(!cfg_load_file(FIX "no_such_file.yaml", &root, &err), "missing file");
    EXPECT_HAS(err.msg, "no_such_file.yaml: cannot open");
    /* an alias to its own ancestor is a cycle: bounded, reported */
    EXPECT(!cfg_load_string("a: &x\n  b: *x\n", "t.yaml", &root, &err), "alias cycle");
    EXPECT_HAS(err.msg, "nesting deeper than");
    /* empty file = empty map */
    EXPECT(cfg_load_string("# nothing\n", "t.yaml", &root, &err) && root->kind == CFG_MAP && root->n == 0, "empty");
    cfg_free(root);
}

static void test_overrides(void) {
    s2d_err err;
    cfg_node *root = load_str("model:\n  lr: 0.1\npipeline:\n  - algo: {clip: 0.2}\n  - algo: {clip: 0.3}\n");
    if (!root) return;
    EXPECT(cfg_set_arg(root, "model.lr=0.5", &err), "%s", err.msg);
    EXPECT(cfg_set(root, "pipeline[1].algo.clip", "0.25", &err), "%s", err.msg);
    EXPECT(cfg_set(root, "new.deep.key", "hello world", &err), "%s", err.msg);
    EXPECT(cfg_set(root, "model.layers", "[1, 2, 3]", &err), "%s", err.msg);
    EXPECT(cfg_set(root, "model.opt", "{name: adam, beta: 0.9}", &err), "%s", err.msg);
    EXPECT(cfg_set(root, "model.tag", "\"7\"", &err), "%s", err.msg);
    cfg_node *model, *pipe, *deep, *layers, *opt;
    double lr, clip, beta;
    const char *s;
    int v;
    EXPECT(cfg_get_map(root, "model", &model, &err), "%s", err.msg);
    EXPECT(cfg_get_double(model, "lr", 0, 1, &lr, &err) && lr == 0.5, "lr %g", lr);
    EXPECT(cfg_get_seq(model, "layers", &layers, &err) && cfg_len(layers) == 3, "layers");
    for (int i = 0; i < cfg_len(layers); i++)
        EXPECT(cfg_as_int(cfg_at(layers, i), 0, 9, &v, &err) && v == i + 1, "layers[%d]", i);
    EXPECT(cfg_get_map(model, "opt", &opt, &err) && cfg_get_double(opt, "beta", 0, 1, &beta, &err) && beta == 0.9,
           "opt.beta");
    EXPECT(cfg_get_str(opt, "name", &s, &err), "opt.name");
    EXPECT_STREQ(s, "adam");
    EXPECT(cfg_get_str(model, "tag", &s, &err), "tag");
    EXPECT(!cfg_get_int(model, "tag", 0, 9, &v, &err), "quoted override stays a string");
    EXPECT(cfg_get_seq(root, "pipeline", &pipe, &err), "%s", err.msg);
    cfg_node *algo1 = cfg_find(cfg_at(pipe, 1), "algo");
    EXPECT(cfg_get_double(algo1, "clip", 0, 1, &clip, &err) && clip == 0.25, "clip %g", clip);
    cfg_node *new_map;
    EXPECT(cfg_get_map(root, "new", &new_map, &err) && cfg_get_map(new_map, "deep", &deep, &err), "%s", err.msg);
    EXPECT(cfg_get_str(deep, "key", &s, &err), "%s", err.msg);
    EXPECT_STREQ(s, "hello world");
    /* errors from an overridden value name the override */
    EXPECT(cfg_set(root, "model.lr", "fast", &err), "%s", err.msg);
    EXPECT(!cfg_get_double(model, "lr", 0, 1, &lr, &err), "fast as double");
    EXPECT_STREQ(err.msg, "--set model.lr=fast: model.lr: expected a number, got 'fast'");
    EXPECT(cfg_set(root, "model.lrr", "1", &err), "%s", err.msg);
    EXPECT(!cfg_check_unused(model, &err), "unknown override key");
    EXPECT_HAS(err.msg, "--set model.lrr=1: unknown key 'lrr' at model.lrr (did you mean 'lr'?)");
    /* structural errors */
    EXPECT(!cfg_set(root, "pipeline[2].algo.clip", "1", &err), "index past the end");
    EXPECT_STREQ(err.msg, "--set pipeline[2].algo.clip=1: index 2 is past the end of pipeline (2 elements)");
    EXPECT(!cfg_set(root, "model.lr.x", "1", &err), "key under a scalar");
    EXPECT_HAS(err.msg, "model.lr is a scalar, not a map");
    EXPECT(!cfg_set(root, "model[0]", "1", &err), "index into a map");
    EXPECT_HAS(err.msg, "model is a map, not a sequence");
    EXPECT(!cfg_set(root, "a..b", "1", &err), "empty key");
    EXPECT(!cfg_set(root, "a[x]", "1", &err), "bad index");
    EXPECT(!cfg_set(root, "model.layers", "[1, 2", &err), "bad flow value");
    EXPECT_HAS(err.msg, "--set model.layers=[1, 2:");
    EXPECT(!cfg_set_arg(root, "novalue", &err), "no '='");
    /* an empty value is refused naming the --set (it read as null, and the error then named the file) */
    EXPECT(!cfg_set_arg(root, "model.lr=", &err) && strstr(err.msg, "--set model.lr=: the value is empty"),
           "empty value: %s", err.msg);
    EXPECT(cfg_set_arg(root, "model.note=\"\"", &err), "an empty string is written \"\": %s", err.msg);
    cfg_free(root);
}

static void test_write_roundtrip(void) {
    s2d_err err;
    cfg_node *root;
    EXPECT(cfg_load_file(FIX "good.yaml", &root, &err), "%s", err.msg);
    if (!root) return;
    EXPECT(cfg_set(root, "weird", "a: b # not a comment", &err), "%s", err.msg);
    EXPECT(cfg_set(root, "pipeline[0].algo.kl", "k2", &err), "%s", err.msg);
    char path[] = "/tmp/s2d_cfg_XXXXXX";
    int fd = mkstemp(path);
    EXPECT(fd >= 0, "mkstemp");
    FILE *fp = fdopen(fd, "w");
    EXPECT(cfg_write(root, fp, &err), "%s", err.msg);
    fclose(fp);
    cfg_node *again = NULL;
    EXPECT(cfg_load_file(path, &again, &err), "reload: %s", err.msg);
    if (again) {
        EXPECT(cfg_equal(root, again), "written config does not reload to the same tree");
        cfg_node *w = cfg_find(again, "weird");
        EXPECT(w && w->kind == CFG_SCALAR && w->quoted && strcmp(w->value, "a: b # not a comment") == 0, "weird");
        cfg_node *tag = cfg_find(again, "tag");
        EXPECT(tag && tag->quoted && strcmp(tag->value, "3") == 0, "quoted \"3\" survives");
        cfg_node *seed = cfg_find(again, "seed");
        EXPECT(seed && !seed->quoted && strcmp(seed->value, "1234") == 0, "plain 1234 survives");
    }
    /* a different tree is not equal (the comparison can fail) */
    EXPECT(cfg_set(again, "seed", "1235", &err), "%s", err.msg);
    EXPECT(!cfg_equal(root, again), "cfg_equal ignores a changed value");
    cfg_free(again);
    cfg_free(root);
    unlink(path);
}

int main(void) {
    RUN_TEST(test_load_and_read);
    RUN_TEST(test_type_and_range_errors);
    RUN_TEST(test_str_tag);
    RUN_TEST(test_unknown_key);
    RUN_TEST(test_duplicate_and_syntax);
    RUN_TEST(test_overrides);
    RUN_TEST(test_write_roundtrip);
    return TEST_SUMMARY();
}
