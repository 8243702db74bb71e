/*
 * verify_types.h - the value types of verify's public interface: the
 * options of a run and the counts of one table.
 *
 * They sit in a header of their own, below every verify module, so that
 * verify.h (the public interface, whose verify.c drives the pieces) and
 * the pieces below it (verify_run.h and the modules that include it) can
 * share them without an include cycle. Only types: no functions.
 */
#ifndef NS_VERIFY_TYPES_H
#define NS_VERIFY_TYPES_H

#include <stddef.h>
#include <stdint.h>

struct verify_options {
    size_t chunk;           /* rows per page and per repair batch, >= 1 */
    size_t limit_report;    /* examples kept per table */
    int repair;             /* non-zero: fix what is found */
    int64_t epoch;          /* source epoch of the repairs: the current one
                               (config source.epochs), compared before the
                               position as the workers' changes are */
};

/* Counts for one table; "graph" is nodes or relationships seen. */
struct verify_counts {
    uint64_t rows;
    uint64_t graph;
    uint64_t missing;
    uint64_t extra;
    uint64_t mismatched;        /* elements with at least one property off */
    uint64_t mismatched_props;  /* properties off, all elements */
    uint64_t parent_missing;
    uint64_t parent_extra;
    uint64_t placeholders;      /* bare nodes without a row: not counted */
    uint64_t repaired;          /* repair actions the graph accepted */
    uint64_t repair_skipped;    /* kept out by a guard or unconvertible */
};

#endif
