/* s2d tokenize: text <-> token ids with a Hugging Face tokenizer.json, one JSON value per line.
 *   s2d tokenize --tokenizer DIR            stdin: JSON strings      stdout: JSON arrays of ids
 *   s2d tokenize --tokenizer DIR --decode   stdin: JSON arrays of ids stdout: JSON strings
 * No special tokens are added; added-token strings in the text (e.g. "<|im_start|>") map to their ids.
 * Output goes to stdout as each line is done; a bad line stops the command with stdin:LINE and a reason. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "text/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: s2d tokenize --tokenizer DIR [--decode]\n"
            "  encode (default): stdin one JSON string per line -> stdout one JSON array of token ids per line\n"
            "  --decode:         stdin one JSON array of ids per line -> stdout one JSON string per line\n"
            "  DIR holds tokenizer.json (or give the file itself). No special tokens are added.\n");
}

/* cJSON stores strings NUL-terminated, so a \u0000 escape would silently cut the text short: refuse it.
 * Scans the raw line, skipping escaped pairs so "\\u0000" (an escaped backslash) is not mistaken. */
static bool line_has_nul_escape(const char *line) {
    for (const char *p = line; *p; p++) {
        if (*p != '\\') continue;
        if (p[1] == 'u' && p[2] == '0' && p[3] == '0' && p[4] == '0' && p[5] == '0') return true;
        if (p[1]) p++;
    }
    return false;
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL;
    bool decode = false;
    enum { O_TOKENIZER = 256, O_DECODE };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"tokenizer", required_argument, 0, O_TOKENIZER},
                                         {"decode", no_argument, 0, O_DECODE}, {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("tokenize", argc, argv, opts, usage, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': usage(stdout); return 0;
        case O_TOKENIZER: dir = val; break;
        case O_DECODE: decode = true; break;
        }
    }
    if (optind < argc) {
        usage(stderr);
        die("tokenize: unknown argument '%s'", argv[optind]);
    }
    if (!dir) {
        usage(stderr);
        die("tokenize: --tokenizer DIR is required");
    }
    s2d_err err;
    tokenizer *tok;
    CHECK_OK(tok_load(dir, &tok, &err), &err);

    jsonl_reader r;
    jsonl_reader_init(&r, stdin, "stdin");
    tok_ids ids = {0};
    tok_bytes text = {0};
    /* all output is held until every line succeeded: a failing line leaves stdout empty (as generate) */
    char *held = NULL;
    size_t held_len = 0;
    FILE *out = open_memstream(&held, &held_len);
    if (!out) die("tokenize: open_memstream failed");
    cJSON *j;
    while ((j = jsonl_next(&r)) != NULL) {
        if (decode) {
            int n;
            int32_t *v = json_int_array(j, &n, &r);
            if (!tok_decode(tok, v, (size_t)n, &text, &err)) die("stdin:%ld: %s", r.lineno, err.msg);
            print_json_string(out, text.bytes, text.n);
            fputc('\n', out);
            free(v);
        } else {
            if (!cJSON_IsString(j)) die("stdin:%ld: expected a JSON string (the text to encode)", r.lineno);
            if (line_has_nul_escape(r.buf)) die("stdin:%ld: the text contains U+0000, which is not supported", r.lineno);
            ids.n = 0;
            if (tok_encode(tok, j->valuestring, strlen(j->valuestring), &ids, &err) < 0)
                die("stdin:%ld: %s", r.lineno, err.msg);
            print_int_array(out, ids.ids, (int)ids.n);
        }
        cJSON_Delete(j);
    }
    jsonl_reader_free(&r);
    tok_ids_free(&ids);
    tok_bytes_free(&text);
    tok_free(tok);
    if (fclose(out) != 0) die("tokenize: out of memory holding the output");
    bool wrote = fwrite(held, 1, held_len, stdout) == held_len;
    free(held);
    if (!wrote || fflush(stdout) != 0 || ferror(stdout)) die("tokenize: error writing stdout");
    return 0;
}
