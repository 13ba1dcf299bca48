/*
 * Typed configuration from YAML files, with RocketMQ's key names.
 *
 * A daemon describes its settings once, as a table of cfg_key entries that
 * point (by offset) into its own settings struct. The loader fills the struct
 * from the defaults, then the YAML file (`-c FILE`), then `--set key=value`
 * overrides, in that order. Unknown keys, wrong types and out-of-range values
 * are refused with "file:line: key: reason" so a bad config never starts a
 * daemon. The same table documents the keys (cfg_print_reference).
 *
 * Ownership: the table and the target struct belong to the caller. String
 * values are copied into fixed-size char arrays inside the target struct, so
 * there is nothing to free.
 */
#ifndef RMQ_CONFIG_H
#define RMQ_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cfg_type {
    CFG_INT,    /* int64_t; range [min, max] (min == max == 0: unbounded) */
    CFG_BOOL,   /* bool; true/false (also yes/no, on/off, 1/0; any case) */
    CFG_STRING, /* char[size]; longer values are refused */
    CFG_ENUM,   /* int: index into enum_values (NULL-terminated), matched exactly */
    CFG_DOUBLE, /* double; range [dmin, dmax] (dmin == dmax == 0: unbounded) */
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t offset;                   /* offsetof(settings struct, field) */
    size_t size;                     /* CFG_STRING: sizeof the char array */
    int64_t min, max;                /* CFG_INT */
    double dmin, dmax;               /* CFG_DOUBLE */
    const char *const *enum_values;  /* CFG_ENUM */
    const char *def;                 /* default, as text; parsed like a value
                                        (NULL: "", false, 0 or the first enum value) */
    const char *help;                /* one line for --help and the README table */
};

/* Ends a cfg_key table. */
#define CFG_END { .name = NULL }

/* Sets every key to its default. Returns 0 or -1 with a message in err. */
int cfg_defaults(const struct cfg_key *keys, void *target, char *err, size_t errlen);

/* Loads a YAML file: a single mapping of scalar key: value pairs. Keys not in
 * the table, non-scalar values, duplicates and bad values are errors, reported
 * as "path:line: key: reason". An empty file changes nothing. Returns 0, or -1
 * with target left exactly as it was. */
int cfg_load_file(const struct cfg_key *keys, void *target, const char *path,
                  char *err, size_t errlen);

/* Applies one "key=value" override. Returns 0 or -1 ("--set key: reason"). */
int cfg_set(const struct cfg_key *keys, void *target, const char *assignment,
            char *err, size_t errlen);

/* Handles a daemon's standard command line (argv[0] is skipped): defaults, then
 * `-c FILE` / `--config FILE`, then each `--set key=value` (or `--set=key=value`)
 * in order, wherever they appear on the line. `--help` prints usage and the key reference to
 * stdout and returns 1. Unrecognised arguments are errors. Returns 0, 1 (help
 * printed, caller exits 0) or -1 (error in err; caller exits non-zero). */
int cfg_parse_args(const struct cfg_key *keys, void *target, const char *prog,
                   int argc, char **argv, char *err, size_t errlen);

/* Prints "key = value" for every key (used at start-up, at info level). */
void cfg_dump(const struct cfg_key *keys, const void *target, FILE *out);

/* Prints a Markdown table (key | type | default | description) of the keys. */
void cfg_print_reference(const struct cfg_key *keys, FILE *out);

#endif
