/* s2d verify [--mode math|gsm8k]: JSON lines {"response": str, "answer": str} on stdin → one line
 * {"correct": bool, "extracted": str|null} per record on stdout. Output is written only once every line has
 * been checked, so bad input leaves no partial output. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "text/verify.h"

static void usage(FILE *out) {
    fprintf(out, "usage: s2d verify [--mode math|gsm8k]\n"
                 "  stdin:  one JSON object per line: {\"response\": str, \"answer\": str}\n"
                 "  stdout: one JSON object per line: {\"correct\": bool, \"extracted\": str or null}\n"
                 "  math:   last \\boxed{} of the response vs the reference answer (normalised, numeric, structural)\n"
                 "  gsm8k:  number after '####' (else in the last \\boxed{}, else the last number) vs the number\n"
                 "          after '####' in the answer (or the answer itself)\n");
}

static const char *string_field(const cJSON *obj, const char *field, const jsonl_reader *r) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!v) die("%s:%ld: missing field \"%s\"", r->name, r->lineno, field);
    if (!cJSON_IsString(v) || !v->valuestring)
        die("%s:%ld: field \"%s\" must be a string", r->name, r->lineno, field);
    return v->valuestring;
}

int cmd_verify(int argc, char **argv) {
    verify_mode mode = VERIFY_MODE_MATH;
    enum { O_MODE = 256 };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"mode", required_argument, 0, O_MODE},
                                         {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("verify", argc, argv, opts, usage, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': usage(stdout); return 0;
        case O_MODE:
            if (!verify_mode_parse(val, &mode)) die("--mode: '%s' is not math or gsm8k", val);
            break;
        }
    }
    if (optind < argc) {
        usage(stderr);
        die("verify: unknown option '%s'", argv[optind]);
    }
    char *buf = NULL;
    size_t buf_len = 0;
    FILE *out = open_memstream(&buf, &buf_len);
    CHECK(out, "verify: open_memstream failed");
    verify_result *res = xmalloc(sizeof *res);
    jsonl_reader r;
    jsonl_reader_init(&r, stdin, "stdin");
    cJSON *j;
    while ((j = jsonl_next(&r)) != NULL) {
        if (!cJSON_IsObject(j)) die("stdin:%ld: expected a JSON object {\"response\", \"answer\"}", r.lineno);
        const char *response = string_field(j, "response", &r);
        const char *answer = string_field(j, "answer", &r);
        verify_answer(mode, response, answer, res);
        fprintf(out, "{\"correct\":%s,\"extracted\":", res->correct ? "true" : "false");
        if (res->has_extracted) print_json_string(out, res->extracted, strlen(res->extracted));
        else fputs("null", out);
        fputs("}\n", out);
        cJSON_Delete(j);
    }
    jsonl_reader_free(&r);
    free(res);
    CHECK(fclose(out) == 0, "verify: writing the output buffer failed");
    if (buf_len && fwrite(buf, 1, buf_len, stdout) != buf_len) die("verify: writing stdout failed");
    free(buf);
    if (fflush(stdout) != 0) die("verify: writing stdout failed");
    return 0;
}
