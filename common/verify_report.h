/*
 * verify_report.h - what a verify run found, for people and machines: the
 * examples kept per table while the join runs, and the reports made of
 * them and of the counts.
 *
 * verify_report_text() and verify_report_json() are public (a tool
 * includes this header beside verify.h); the example functions are for
 * the verify modules, which own the examples through `struct verify`
 * (verify_run.h).
 */
#ifndef NS_VERIFY_REPORT_H
#define NS_VERIFY_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "verify_types.h"

struct cJSON;
struct run;
struct verify;
struct verify_example;

/*
 * Keep an example (kind static, key k1 or "k1|k2") while run's table has
 * fewer than opt.limit_report. Strings are copied, except pg and neo4j
 * (may be NULL), which are taken over and freed when the example is not
 * kept. NS_ERR_NOMEM when out of memory.
 */
enum ns_err verify_report_example_add(struct run *run, const char *kind,
                                      const char *k1, const char *k2,
                                      const char *property, char *pg,
                                      char *neo4j);

/* Free what an example holds (not ex itself). */
void verify_report_example_free(struct verify_example *ex);

/* Divergences of one table: missing, extra, mismatched and parent
 * counts. */
uint64_t verify_report_divergences(const struct verify_counts *c);

/* Human report: a summary line per table and its examples. */
void verify_report_text(const struct verify *vf, FILE *f);

/*
 * Machine report: {"tables": [{"table", "element", counts...,
 * "examples": [...]}], "totals": {...}}. Caller frees (cJSON_Delete);
 * NULL when out of memory.
 */
struct cJSON *verify_report_json(const struct verify *vf);

#endif
