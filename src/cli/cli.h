/* cli.h: helpers shared by the subcommands: line-oriented JSON on stdin/stdout with errors that name the
 * source and line, and flag parsing helpers. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "core/json.h" /* print_json_string */

/* Reads JSON lines from fp; `name` ("stdin" or a path) appears in errors. */
typedef struct {
    FILE *fp;
    const char *name;
    long lineno;
    char *buf;
    size_t cap;
} jsonl_reader;

void jsonl_reader_init(jsonl_reader *r, FILE *fp, const char *name);
/* Next non-blank line parsed as JSON (caller cJSON_Delete's it); NULL at end of input.
 * Invalid JSON dies with "<name>:<line>: invalid JSON ...". */
cJSON *jsonl_next(jsonl_reader *r);
void jsonl_reader_free(jsonl_reader *r);

/* A JSON array of integers → ids (malloc'd, *n set); dies naming name:line on anything else. */
int32_t *json_int_array(const cJSON *j, int *n, const jsonl_reader *where);

void print_int_array(FILE *out, const int32_t *v, int n);   /* [1,2,3]\n */
void print_float_array(FILE *out, const float *v, int n);   /* round-trip precision, \n */

/* Subcommand options with getopt_long (long options only; -h is --help; "--name value" and "--name=value"; GNU
 * permutation leaves the positional arguments in argv[optind, argc)). Returns the matched option's val, or -1
 * when the options end, with *value = its argument (NULL for a flag) and *flag = "--name" for messages. Dies on
 * an unknown option ("CMD: unknown option 'X'"), a missing value and a value given to a flag; prints usage
 * first on an unknown option. Start each command with optind = 0 (cli_options_reset). */
int cli_option(const char *cmd, int argc, char **argv, const struct option *opts, void (*usage)(FILE *),
               const char **value, const char **flag);
void cli_options_reset(void);

/* Flag helpers: parse "--name value" values with range checks; die naming the flag on bad input. */
long flag_long(const char *flag, const char *value, long min, long max);
double flag_double(const char *flag, const char *value, double min, double max);

/* --device NAME: opens the backend queue (ops.h ops_open) and makes it the default for every model, workspace
 * and cache this process creates; dies with the reason (not compiled in, no such device) and a hint. */
void cli_use_device(const char *spec);
