/*
 * Typed configuration loader; see config.h.
 *
 * Every value, whatever its source (default text, YAML scalar, --set), goes
 * through one parser (parse_value) that validates into a local and only then
 * stores, so a refused value never half-writes a field. A YAML file is read
 * with libyaml's event API into a scratch copy of the target and committed
 * only when the whole file is valid: a bad file leaves the settings as they
 * were. Reasons are produced without location and the caller prefixes
 * "path:line: key: " or "--set key: ".
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <yaml.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const struct cfg_key *find_key(const struct cfg_key *keys, const char *name, size_t *index)
{
    for (size_t i = 0; keys[i].name; i++) {
        if (strcmp(keys[i].name, name) == 0) {
            if (index)
                *index = i;
            return &keys[i];
        }
    }
    return NULL;
}

static size_t count_keys(const struct cfg_key *keys)
{
    size_t n = 0;
    while (keys[n].name)
        n++;
    return n;
}

/* Writes the "unknown key" reason, suggesting a key that differs only in case. */
static void unknown_key_reason(const struct cfg_key *keys, const char *name, char *reason,
                               size_t rlen)
{
    for (size_t i = 0; keys[i].name; i++) {
        if (strcasecmp(keys[i].name, name) == 0) {
            set_err(reason, rlen, "unknown key (did you mean %s?)", keys[i].name);
            return;
        }
    }
    set_err(reason, rlen, "unknown key");
}

static bool int_range_limited(const struct cfg_key *k) { return k->min != 0 || k->max != 0; }
static bool double_range_limited(const struct cfg_key *k) { return k->dmin != 0.0 || k->dmax != 0.0; }

/* Strict decimal integer: optional sign, digits only, no surrounding blanks. */
static int parse_int(const char *s, int64_t *out, char *reason, size_t rlen)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9') {
        set_err(reason, rlen, "expected an integer, got '%s'", s);
        return -1;
    }
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9') {
            set_err(reason, rlen, "expected an integer, got '%s'", s);
            return -1;
        }
    }
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE) {
        set_err(reason, rlen, "integer '%s' overflows 64 bits", s);
        return -1;
    }
    if (*end != '\0') {
        set_err(reason, rlen, "expected an integer, got '%s'", s);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static int parse_bool(const char *s, bool *out, char *reason, size_t rlen)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    set_err(reason, rlen, "expected a boolean (true/false, yes/no, on/off, 1/0), got '%s'", s);
    return -1;
}

static int parse_double(const char *s, double *out, char *reason, size_t rlen)
{
    if (*s == '\0' || *s == ' ' || *s == '\t' || *s == '\n') {
        set_err(reason, rlen, "expected a number, got '%s'", s);
        return -1;
    }
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0' || end == s) {
        set_err(reason, rlen, "expected a number, got '%s'", s);
        return -1;
    }
    if (errno == ERANGE || !isfinite(v)) {
        set_err(reason, rlen, "number '%s' is not finite or not representable", s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Appends "a, b, c" (the allowed enum values) to reason. */
static void list_enum(const struct cfg_key *k, char *dst, size_t dlen)
{
    size_t used = strlen(dst);
    for (size_t i = 0; k->enum_values && k->enum_values[i]; i++) {
        if (used >= dlen)
            return;
        int n = snprintf(dst + used, dlen - used, "%s%s", i ? ", " : "", k->enum_values[i]);
        if (n < 0)
            return;
        used += (size_t)n;
    }
}

/* Parses `val` (of length len; may contain NUL from YAML escapes) for key k
 * and stores it into target. Nothing is stored on error. */
static int parse_value(const struct cfg_key *k, void *target, const char *val, size_t len,
                       char *reason, size_t rlen)
{
    char *field = (char *)target + k->offset;
    if (strlen(val) != len) {
        set_err(reason, rlen, "value contains a NUL byte");
        return -1;
    }
    switch (k->type) {
    case CFG_INT: {
        int64_t v;
        if (parse_int(val, &v, reason, rlen))
            return -1;
        if (int_range_limited(k) && (v < k->min || v > k->max)) {
            set_err(reason, rlen, "value %" PRId64 " out of range [%" PRId64 ", %" PRId64 "]", v,
                    k->min, k->max);
            return -1;
        }
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case CFG_BOOL: {
        bool v;
        if (parse_bool(val, &v, reason, rlen))
            return -1;
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case CFG_STRING:
        if (k->size == 0 || len >= k->size) {
            set_err(reason, rlen, "string too long (%zu bytes, at most %zu)", len,
                    k->size ? k->size - 1 : 0);
            return -1;
        }
        memcpy(field, val, len + 1);
        return 0;
    case CFG_ENUM:
        for (int i = 0; k->enum_values && k->enum_values[i]; i++) {
            if (strcmp(val, k->enum_values[i]) == 0) {
                memcpy(field, &i, sizeof i);
                return 0;
            }
        }
        set_err(reason, rlen, "invalid value '%s' (allowed: ", val);
        list_enum(k, reason, rlen);
        if (strlen(reason) + 1 < rlen)
            strcat(reason, ")");
        return -1;
    case CFG_DOUBLE: {
        double v;
        if (parse_double(val, &v, reason, rlen))
            return -1;
        if (double_range_limited(k) && !(v >= k->dmin && v <= k->dmax)) {
            set_err(reason, rlen, "value %g out of range [%g, %g]", v, k->dmin, k->dmax);
            return -1;
        }
        memcpy(field, &v, sizeof v);
        return 0;
    }
    }
    set_err(reason, rlen, "key has an unknown type in the table");
    return -1;
}

int cfg_defaults(const struct cfg_key *keys, void *target, char *err, size_t errlen)
{
    char reason[512];
    for (size_t i = 0; keys[i].name; i++) {
        const struct cfg_key *k = &keys[i];
        const char *def = k->def;
        if (!def)
            def = (k->type == CFG_STRING) ? "" : (k->type == CFG_BOOL) ? "false"
                : (k->type == CFG_ENUM && k->enum_values && k->enum_values[0]) ? k->enum_values[0]
                : "0";
        if (parse_value(k, target, def, strlen(def), reason, sizeof reason)) {
            set_err(err, errlen, "default: %s: %s", k->name, reason);
            return -1;
        }
    }
    return 0;
}

/* Bytes of the target struct covered by the table, so a scratch copy can hold
 * every field the loader may write. */
static size_t target_extent(const struct cfg_key *keys)
{
    size_t ext = 0;
    for (size_t i = 0; keys[i].name; i++) {
        size_t sz;
        switch (keys[i].type) {
        case CFG_INT: sz = sizeof(int64_t); break;
        case CFG_BOOL: sz = sizeof(bool); break;
        case CFG_STRING: sz = keys[i].size; break;
        case CFG_ENUM: sz = sizeof(int); break;
        case CFG_DOUBLE: sz = sizeof(double); break;
        default: sz = 0; break;
        }
        if (keys[i].offset + sz > ext)
            ext = keys[i].offset + sz;
    }
    return ext;
}

static const char *event_kind(yaml_event_type_t t)
{
    switch (t) {
    case YAML_SEQUENCE_START_EVENT: return "a sequence";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "not a scalar";
    }
}

struct yaml_reader {
    yaml_parser_t parser;
    const char *path;
    char *err;
    size_t errlen;
};

/* Next event, or -1 with libyaml's own problem text and line in err. */
static int next_event(struct yaml_reader *r, yaml_event_t *ev)
{
    if (yaml_parser_parse(&r->parser, ev))
        return 0;
    const yaml_parser_t *p = &r->parser;
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_READER_ERROR) {
        set_err(r->err, r->errlen, "%s: invalid YAML: %s at byte %zu", r->path, problem,
                p->problem_offset);
    } else if (p->error == YAML_MEMORY_ERROR) {
        set_err(r->err, r->errlen, "%s: out of memory while parsing", r->path);
    } else if (p->context) {
        set_err(r->err, r->errlen, "%s:%zu: invalid YAML: %s %s (line %zu)", r->path,
                p->problem_mark.line + 1, problem, p->context, p->context_mark.line + 1);
    } else {
        set_err(r->err, r->errlen, "%s:%zu: invalid YAML: %s", r->path, p->problem_mark.line + 1,
                problem);
    }
    return -1;
}

/* Reads the key: value pairs of the top-level mapping into target. The
 * MAPPING_START event has been consumed. */
static int read_mapping(struct yaml_reader *r, const struct cfg_key *keys, void *target,
                        size_t *first_line)
{
    char reason[512];
    for (;;) {
        yaml_event_t kev;
        if (next_event(r, &kev))
            return -1;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return 0;
        }
        size_t kline = kev.start_mark.line + 1;
        if (kev.type != YAML_SCALAR_EVENT) {
            set_err(r->err, r->errlen, "%s:%zu: keys must be plain names, got %s", r->path, kline,
                    event_kind(kev.type));
            yaml_event_delete(&kev);
            return -1;
        }
        char name[128];
        snprintf(name, sizeof name, "%s", (const char *)kev.data.scalar.value);
        yaml_event_delete(&kev);

        size_t idx = 0;
        const struct cfg_key *k = find_key(keys, name, &idx);
        if (!k) {
            unknown_key_reason(keys, name, reason, sizeof reason);
            set_err(r->err, r->errlen, "%s:%zu: %s: %s", r->path, kline, name, reason);
            return -1;
        }
        if (first_line[idx]) {
            set_err(r->err, r->errlen, "%s:%zu: %s: duplicate key (first set on line %zu)",
                    r->path, kline, name, first_line[idx]);
            return -1;
        }
        first_line[idx] = kline;

        yaml_event_t vev;
        if (next_event(r, &vev))
            return -1;
        size_t vline = vev.start_mark.line + 1;
        if (vev.type != YAML_SCALAR_EVENT) {
            set_err(r->err, r->errlen, "%s:%zu: %s: value must be a scalar, got %s", r->path,
                    vline, name, event_kind(vev.type));
            yaml_event_delete(&vev);
            return -1;
        }
        int rc = parse_value(k, target, (const char *)vev.data.scalar.value,
                             vev.data.scalar.length, reason, sizeof reason);
        yaml_event_delete(&vev);
        if (rc) {
            set_err(r->err, r->errlen, "%s:%zu: %s: %s", r->path, vline, name, reason);
            return -1;
        }
    }
}

/* Walks stream → (document → mapping) → end. An empty stream or an empty
 * document leaves target untouched. */
static int read_stream(struct yaml_reader *r, const struct cfg_key *keys, void *target,
                       size_t *first_line)
{
    yaml_event_t ev;
    if (next_event(r, &ev))
        return -1;
    yaml_event_delete(&ev); /* STREAM_START */
    if (next_event(r, &ev))
        return -1;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return 0;
    }
    yaml_event_delete(&ev); /* DOCUMENT_START */
    if (next_event(r, &ev))
        return -1;
    size_t line = ev.start_mark.line + 1;
    if (ev.type == YAML_MAPPING_START_EVENT) {
        yaml_event_delete(&ev);
        if (read_mapping(r, keys, target, first_line))
            return -1;
    } else if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.length == 0 &&
               ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        yaml_event_delete(&ev);
    } else {
        set_err(r->err, r->errlen, "%s:%zu: the file must be a mapping of key: value pairs",
                r->path, line);
        yaml_event_delete(&ev);
        return -1;
    }
    if (next_event(r, &ev))
        return -1;
    yaml_event_delete(&ev); /* DOCUMENT_END */
    if (next_event(r, &ev))
        return -1;
    line = ev.start_mark.line + 1;
    bool more = ev.type != YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    if (more) {
        set_err(r->err, r->errlen, "%s:%zu: only one YAML document is allowed", r->path, line);
        return -1;
    }
    return 0;
}

int cfg_load_file(const struct cfg_key *keys, void *target, const char *path, char *err,
                  size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(EISDIR));
        return -1;
    }
    size_t ext = target_extent(keys);
    size_t nkeys = count_keys(keys);
    unsigned char *scratch = malloc(ext ? ext : 1);
    size_t *first_line = calloc(nkeys ? nkeys : 1, sizeof *first_line);
    if (!scratch || !first_line) {
        free(scratch);
        free(first_line);
        fclose(f);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(scratch, target, ext);

    struct yaml_reader r = { .path = path, .err = err, .errlen = errlen };
    int rc = -1;
    if (!yaml_parser_initialize(&r.parser)) {
        set_err(err, errlen, "%s: cannot initialise the YAML parser", path);
    } else {
        yaml_parser_set_input_file(&r.parser, f);
        rc = read_stream(&r, keys, scratch, first_line);
        yaml_parser_delete(&r.parser);
    }
    if (rc == 0 && ferror(f)) {
        set_err(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    if (rc == 0)
        memcpy(target, scratch, ext);
    free(scratch);
    free(first_line);
    return rc;
}

int cfg_set(const struct cfg_key *keys, void *target, const char *assignment, char *err,
            size_t errlen)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) {
        set_err(err, errlen, "--set '%s': expected key=value", assignment);
        return -1;
    }
    char name[128];
    size_t nlen = (size_t)(eq - assignment);
    if (nlen >= sizeof name) {
        set_err(err, errlen, "--set %.*s...: unknown key", 32, assignment);
        return -1;
    }
    memcpy(name, assignment, nlen);
    name[nlen] = '\0';
    char reason[512];
    const struct cfg_key *k = find_key(keys, name, NULL);
    if (!k) {
        unknown_key_reason(keys, name, reason, sizeof reason);
        set_err(err, errlen, "--set %s: %s", name, reason);
        return -1;
    }
    if (parse_value(k, target, eq + 1, strlen(eq + 1), reason, sizeof reason)) {
        set_err(err, errlen, "--set %s: %s", name, reason);
        return -1;
    }
    return 0;
}

static void print_usage(const char *prog, FILE *out)
{
    fprintf(out,
            "Usage: %s [-c FILE] [--set key=value]... [-h]\n"
            "\n"
            "  -c, --config FILE     load settings from a YAML file (key: value per line)\n"
            "  --set key=value       override one setting; applied after the file, in order\n"
            "  -h, --help            show this help and the settings reference\n"
            "\n"
            "Settings:\n\n",
            prog);
}

int cfg_parse_args(const struct cfg_key *keys, void *target, const char *prog, int argc,
                   char **argv, char *err, size_t errlen)
{
    const char *config_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_usage(prog, stdout);
            cfg_print_reference(keys, stdout);
            fflush(stdout);
            return 1;
        }
        const char *path = NULL;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                set_err(err, errlen, "%s: missing file name", a);
                return -1;
            }
            path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            path = a + 9;
        } else if (strcmp(a, "--set") == 0) {
            if (i + 1 >= argc) {
                set_err(err, errlen, "--set: missing key=value");
                return -1;
            }
            i++;
            continue;
        } else if (strncmp(a, "--set=", 6) == 0) {
            continue;
        } else {
            set_err(err, errlen, "unrecognised argument '%s' (try --help)", a);
            return -1;
        }
        if (config_path) {
            set_err(err, errlen, "%s: only one config file may be given (already have %s)", a,
                    config_path);
            return -1;
        }
        if (*path == '\0') {
            set_err(err, errlen, "%s: empty file name", a);
            return -1;
        }
        config_path = path;
    }

    if (cfg_defaults(keys, target, err, errlen))
        return -1;
    if (config_path && cfg_load_file(keys, target, config_path, err, errlen))
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *assignment = NULL;
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            i++;
        } else if (strcmp(argv[i], "--set") == 0) {
            assignment = argv[++i];
        } else if (strncmp(argv[i], "--set=", 6) == 0) {
            assignment = argv[i] + 6;
        }
        if (assignment && cfg_set(keys, target, assignment, err, errlen))
            return -1;
    }
    return 0;
}

/* Formats the current value of k into dst. */
static void format_value(const struct cfg_key *k, const void *target, char *dst, size_t dlen)
{
    const char *field = (const char *)target + k->offset;
    switch (k->type) {
    case CFG_INT: {
        int64_t v;
        memcpy(&v, field, sizeof v);
        snprintf(dst, dlen, "%" PRId64, v);
        return;
    }
    case CFG_BOOL: {
        bool v;
        memcpy(&v, field, sizeof v);
        snprintf(dst, dlen, "%s", v ? "true" : "false");
        return;
    }
    case CFG_STRING:
        snprintf(dst, dlen, "%.*s", (int)strnlen(field, k->size), field);
        return;
    case CFG_ENUM: {
        int v;
        memcpy(&v, field, sizeof v);
        int n = 0;
        while (k->enum_values && k->enum_values[n])
            n++;
        snprintf(dst, dlen, "%s", (v >= 0 && v < n) ? k->enum_values[v] : "?");
        return;
    }
    case CFG_DOUBLE: {
        double v;
        memcpy(&v, field, sizeof v);
        snprintf(dst, dlen, "%g", v);
        return;
    }
    }
    snprintf(dst, dlen, "?");
}

void cfg_dump(const struct cfg_key *keys, const void *target, FILE *out)
{
    char val[4096];
    for (size_t i = 0; keys[i].name; i++) {
        format_value(&keys[i], target, val, sizeof val);
        fprintf(out, "%s = %s\n", keys[i].name, val);
    }
}

/* Writes s with '|' escaped so it stays inside one Markdown table cell. */
static void md_cell(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s == '\n')
            fputc(' ', out);
        else
            fputc(*s, out);
    }
}

void cfg_print_reference(const struct cfg_key *keys, FILE *out)
{
    fprintf(out, "| Key | Type | Default | Description |\n");
    fprintf(out, "|-----|------|---------|-------------|\n");
    for (size_t i = 0; keys[i].name; i++) {
        const struct cfg_key *k = &keys[i];
        char type[512];
        switch (k->type) {
        case CFG_INT:
            if (int_range_limited(k))
                snprintf(type, sizeof type, "int [%" PRId64 ", %" PRId64 "]", k->min, k->max);
            else
                snprintf(type, sizeof type, "int");
            break;
        case CFG_BOOL:
            snprintf(type, sizeof type, "bool");
            break;
        case CFG_STRING:
            snprintf(type, sizeof type, "string (max %zu)", k->size ? k->size - 1 : 0);
            break;
        case CFG_ENUM:
            snprintf(type, sizeof type, "one of: ");
            list_enum(k, type, sizeof type);
            break;
        case CFG_DOUBLE:
            if (double_range_limited(k))
                snprintf(type, sizeof type, "number [%g, %g]", k->dmin, k->dmax);
            else
                snprintf(type, sizeof type, "number");
            break;
        default:
            snprintf(type, sizeof type, "?");
            break;
        }
        fprintf(out, "| `%s` | ", k->name);
        md_cell(out, type);
        fputs(" | ", out);
        if (k->def && *k->def) {
            fputc('`', out);
            md_cell(out, k->def);
            fputc('`', out);
        } else {
            fputs("(empty)", out);
        }
        fputs(" | ", out);
        md_cell(out, k->help);
        fputs(" |\n", out);
    }
}
