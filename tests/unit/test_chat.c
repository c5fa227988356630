/* Chat templates: byte-for-byte against Hugging Face apply_chat_template renderings
 * (tests/fixtures/chat/chat_cases.jsonl, made by tools/make_chat_fixtures.py from the tokenizer_config.json
 * jinja templates of Qwen3 and Llama 3.1). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/common.h"
#include "text/chat.h"
#include "test.h"

static const char *str_field(const cJSON *o, const char *k) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(f) ? f->valuestring : NULL;
}

static void test_fixtures(void) {
    char *text;
    size_t len;
    s2d_err err;
    EXPECT(read_file("tests/fixtures/chat/chat_cases.jsonl", &text, &len, &err), "%s", err.msg);
    if (!text) return;
    int cases = 0, per_template[4] = {0};
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        EXPECT(o != NULL, "fixture line %d is not JSON", cases + 1);
        if (!o) continue;
        const char *name = str_field(o, "template"), *problem = str_field(o, "problem"),
                   *instruction = str_field(o, "instruction"), *content = str_field(o, "content"),
                   *rendered = str_field(o, "rendered");
        chat_template t;
        EXPECT(name && chat_template_parse(name, &t, &err), "template %s", name ? name : "(none)");
        if (name && problem && instruction && content && rendered && chat_template_parse(name, &t, &err)) {
            char *c = chat_user_content(problem, instruction);
            char *r = chat_render(t, c);
            char *r2 = chat_render_problem(t, problem, instruction);
            EXPECT(strcmp(c, content) == 0, "case %d (%s): user content differs:\n  got  %s\n  want %s", cases + 1,
                   name, c, content);
            EXPECT(strcmp(r, rendered) == 0, "case %d (%s): rendering differs:\n  got  %s\n  want %s", cases + 1,
                   name, r, rendered);
            EXPECT(strcmp(r2, rendered) == 0, "case %d (%s): chat_render_problem differs", cases + 1, name);
            per_template[t]++;
            free(c);
            free(r);
            free(r2);
        }
        cJSON_Delete(o);
        cases++;
    }
    free(text);
    EXPECT(cases >= 40, "only %d fixture cases", cases);
    for (int t = 0; t < 4; t++) EXPECT(per_template[t] >= 10, "template %d has %d cases", t, per_template[t]);
}

static void test_names_and_stops(void) {
    s2d_err err;
    chat_template t;
    EXPECT(!chat_template_parse("chatml", &t, &err), "unknown template accepted");
    EXPECT(strstr(err.msg, "unknown chat template 'chatml' (expected one of none, qwen3, qwen3-nothink, llama3)"),
           "message: %s", err.msg);
    for (int i = 0; i < 4; i++) {
        EXPECT(chat_template_parse(chat_template_name((chat_template)i), &t, &err) && (int)t == i, "name %d", i);
    }
    int32_t ids[4];
    /* ids of <|im_end|>, <|endoftext|> in the Qwen3 tokenizer; Llama 3.1 generation_config eos ids */
    EXPECT(chat_stop_ids(CHAT_QWEN3, ids, 4) == 2 && ids[0] == 151645 && ids[1] == 151643, "qwen3 stops");
    EXPECT(chat_stop_ids(CHAT_QWEN3_NOTHINK, ids, 4) == 2, "qwen3-nothink stops");
    EXPECT(chat_stop_ids(CHAT_LLAMA3, ids, 4) == 3 && ids[0] == 128001 && ids[1] == 128008 && ids[2] == 128009,
           "llama3 stops");
    EXPECT(chat_stop_ids(CHAT_NONE, ids, 4) == 0, "none has no stops of its own");
    /* malformed UTF-8 is kept, never stripped past */
    const char *b, *e;
    const char bad[] = "\xe3\x80 x \xc2";
    chat_py_strip(bad, &b, &e);
    EXPECT(b == bad && e == bad + sizeof bad - 1, "malformed UTF-8 edges kept");
}

/* tokenizer_config.json's chat_template -> the built-in template it is (the real Qwen3 and Llama 3.1 files). */
static void test_from_tokenizer(void) {
    s2d_err err;
    chat_template t = CHAT_NONE;
    bool found = false;
    EXPECT(chat_template_from_tokenizer("tests/fixtures/tokenizers/qwen3", &found, &t, &err) && found &&
               t == CHAT_QWEN3, "qwen3 tokenizer_config.json: %s", found ? chat_template_name(t) : err.msg);
    found = false;
    EXPECT(chat_template_from_tokenizer("tests/fixtures/tokenizers/llama3_1/tokenizer.json", &found, &t, &err) &&
               found && t == CHAT_LLAMA3, "llama3_1 (given as the tokenizer.json file)");
    found = true;
    EXPECT(chat_template_from_tokenizer("tests/fixtures/data/tiny_tokenizer", &found, &t, &err) && !found,
           "no tokenizer_config.json: nothing found, no error");
    EXPECT(chat_template_fits(CHAT_QWEN3, "qwen3") && chat_template_fits(CHAT_QWEN3_NOTHINK, "qwen2") &&
               chat_template_fits(CHAT_LLAMA3, "llama") && chat_template_fits(CHAT_NONE, "llama"),
           "fitting templates");
    EXPECT(!chat_template_fits(CHAT_LLAMA3, "qwen3") && !chat_template_fits(CHAT_QWEN3, "llama"),
           "llama3 on qwen3 and qwen3 on llama do not fit");
}

/* The rule eval and train share: a name wins, else the tokenizers' (which must agree), else the fallback. */
static void test_choose(void) {
    s2d_err err;
    chat_template t = CHAT_NONE;
    const char *from = NULL;
    const char *q[] = {NULL, "tests/fixtures/data/tiny_tokenizer", "tests/fixtures/tokenizers/qwen3",
                       "tests/fixtures/tokenizers/qwen3/tokenizer.json"};
    EXPECT(chat_template_choose(NULL, "prompt.template", q, 4, "llama3", "the default", &t, &from, &err) &&
               t == CHAT_QWEN3 && strcmp(from, "the tokenizer's tokenizer_config.json") == 0,
           "from the tokenizers that have one (NULL and none skipped)");
    EXPECT(chat_template_choose("auto", "prompt.template", q, 2, "llama3", "the default", &t, &from, &err) &&
               t == CHAT_LLAMA3 && strcmp(from, "the default") == 0,
           "auto without a chat_template: the fallback");
    EXPECT(chat_template_choose("none", "--template", q, 4, "llama3", "the default", &t, &from, &err) &&
               t == CHAT_NONE && strcmp(from, "--template") == 0,
           "a name wins over the tokenizers");
    const char *mixed[] = {"tests/fixtures/tokenizers/qwen3", "tests/fixtures/tokenizers/llama3_1"};
    EXPECT(!chat_template_choose(NULL, "prompt.template", mixed, 2, "qwen3", "the default", &t, &from, &err) &&
               strstr(err.msg, "differ") && strstr(err.msg, "give prompt.template NAME"),
           "tokenizers that disagree: refused (%s)", err.msg);
    EXPECT(!chat_template_choose("qwen4", "prompt.template", q, 0, "qwen3", "the default", &t, &from, &err) &&
               strstr(err.msg, "qwen4"),
           "an unknown name: refused");
}

int main(void) {
    RUN_TEST(test_fixtures);
    RUN_TEST(test_from_tokenizer);
    RUN_TEST(test_choose);
    RUN_TEST(test_names_and_stops);
    return TEST_SUMMARY();
}
