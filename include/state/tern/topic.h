/* tern topic tree: topic name / filter validation and a level trie that maps a
 * key (a topic filter, or a topic name) to a set of caller-owned values.
 *
 * One structure serves both directions:
 *  - subscriptions: keys are filters; tern_topic_tree_match() finds every
 *    (filter, value) whose filter matches a published topic name;
 *  - retained messages: keys are topic names; tern_topic_tree_match_filter()
 *    finds every (name, value) whose name matches a subscription filter.
 * Both follow MQTT's rules, including that a filter starting with a wildcard
 * does not match a topic starting with '$'.
 *
 * Pure C: no I/O, no globals. The tree owns its nodes and copies of the keys;
 * values are opaque pointers the caller owns.
 */
#ifndef TERN_TOPIC_H
#define TERN_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest key (a topic name or filter, MQTT's u16 string limit), and most levels
 * a key in a tree may have: tern_topic_tree_add() refuses deeper keys with
 * TERN_EINVAL, which bounds the matching stack. */
#define TERN_TOPIC_KEY_MAX 65535u
#define TERN_TOPIC_LEVELS_MAX 1024u

/* A valid topic name: non-empty, no '+' or '#', at most TERN_TOPIC_LEVELS_MAX
 * levels. (UTF-8 is checked by the codec.) */
bool tern_topic_name_valid(const char *name, size_t len);

/* A valid topic filter: non-empty, at most TERN_TOPIC_LEVELS_MAX levels (a shared
 * filter's prefix included); '#' only as the last whole level; '+' only as
 * a whole level. A shared filter "$share/GROUP/FILTER" is valid when GROUP is
 * non-empty without '/', '+' or '#', and FILTER is a valid filter. */
bool tern_topic_filter_valid(const char *filter, size_t len);

/* Splits "$share/GROUP/FILTER". Returns true for a shared filter (any filter
 * starting with "$share/") and sets the group and inner filter (pointers into
 * `filter`; inner is empty when there is no '/' after GROUP); false for a plain
 * filter. Validity is tern_topic_filter_valid()'s job. */
bool tern_topic_shared_split(const char *filter, size_t len, const char **group,
                             size_t *group_len, const char **inner, size_t *inner_len);

/* Does `filter` match topic `name`? (Both assumed valid; no $share prefix.) */
bool tern_topic_matches(const char *filter, size_t filter_len, const char *name,
                        size_t name_len);

struct tern_topic_tree;

/* Called for each match. `key` is the stored key (NUL-terminated, owned by the
 * tree, valid during the callback). Return non-zero to stop the walk: the match /
 * walk function then returns that value (else 0). The callback must not modify
 * the tree.
 *
 * Visit order is unspecified. It depends on the sequence of adds and removes
 * and on the process's hash seed (tern/hmap.h), never on addresses: replicas
 * and a tree rebuilt from a snapshot visit in other orders, so replicated logic
 * must not let the order decide an outcome (the FSM sorts what it collects). */
typedef int (*tern_topic_visit_fn)(void *ctx, const char *key, size_t key_len,
                                   void *value);

struct tern_topic_tree *tern_topic_tree_new(void);
void tern_topic_tree_free(struct tern_topic_tree *t);

/* Adds value under key. A key holds a set of values; adding a value already
 * there is a no-op. Returns 0, TERN_ENOMEM, or TERN_EINVAL for a NULL value or a
 * key longer than TERN_TOPIC_KEY_MAX or with more than TERN_TOPIC_LEVELS_MAX
 * levels. Levels "+" and "#" are wildcards for match(); store names (no
 * wildcards) in a tree used with match_filter(). */
int tern_topic_tree_add(struct tern_topic_tree *t, const char *key, size_t len,
                        void *value);

/* Removes value from key; prunes empty nodes. Returns 0 or TERN_ENOTFOUND. */
int tern_topic_tree_remove(struct tern_topic_tree *t, const char *key, size_t len,
                           void *value);

/* The single value stored under an exact key, or NULL (for one-value-per-key use,
 * like retained messages; with several values it returns any one of them). */
void *tern_topic_tree_get(const struct tern_topic_tree *t, const char *key, size_t len);

/* Visits every (filter key, value) whose filter matches topic name. */
int tern_topic_tree_match(const struct tern_topic_tree *t, const char *name, size_t len,
                          tern_topic_visit_fn fn, void *ctx);

/* Visits every (name key, value) whose name is matched by `filter`. */
int tern_topic_tree_match_filter(const struct tern_topic_tree *t, const char *filter,
                                 size_t len, tern_topic_visit_fn fn, void *ctx);

/* Visits every (key, value) in the tree (order unspecified). */
int tern_topic_tree_walk(const struct tern_topic_tree *t, tern_topic_visit_fn fn,
                         void *ctx);

/* Number of (key, value) pairs stored. */
size_t tern_topic_tree_count(const struct tern_topic_tree *t);

#endif
