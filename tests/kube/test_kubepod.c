/* Pod summaries, watch event envelopes and LIST pages (include/podclaim/kubepod.h): what a
 * controller acts on is read right, and no input makes the decoder crash, over-read or accept
 * malformed JSON. */
#include <podclaim/kubepod.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A pod as kube-apiserver writes it, a recycled sandbox waiting for its restart. */
static const char *POD =
        "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"py-x7k2\","
        "\"generateName\":\"py-\",\"namespace\":\"sandboxes\",\"uid\":\"4f0c-11\","
        "\"resourceVersion\":\"9120\",\"creationTimestamp\":\"2026-12-01T10:00:00Z\","
        "\"labels\":{\"podclaim.io/pool\":\"py\",\"podclaim.io/phase\":\"Stopping\","
        "\"team\":\"ml\"},\"annotations\":{\"podclaim.io/"
        "claim-id\":\"c-1\",\"note\":\"\\u00e9t\\u00e9\"},"
        "\"ownerReferences\":[{\"apiVersion\":\"podclaim.io/v1alpha1\",\"kind\":\"SandboxPool\","
        "\"name\":\"py\",\"uid\":\"u\",\"controller\":true}],"
        "\"managedFields\":[{\"manager\":\"kubelet\",\"fieldsV1\":{\"f:status\":{}}}]},"
        "\"spec\":{\"containers\":[{\"name\":\"main\",\"image\":\"python:3.12\",\"resources\":{}},"
        "{\"name\":\"side\",\"image\":\"envoy:1\"}],\"restartPolicy\":\"Always\"},"
        "\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Initialized\","
        "\"status\":\"True\"},{\"type\":\"Ready\",\"status\":\"False\"}],"
        "\"containerStatuses\":[{\"name\":\"main\",\"image\":\"python:3.11\",\"ready\":false,"
        "\"state\":{\"waiting\":{}}},{\"name\":\"side\",\"image\":\"envoy:1\",\"ready\":true}]}}";

Test(kubepod, reads_what_a_pool_controller_acts_on)
{
    pc_kube_pod *p;
    char err[256] = "";
    cr_assert_eq(pc_kube_pod_decode(POD, strlen(POD), &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(p->namespace_, "sandboxes");
    cr_assert_str_eq(p->name, "py-x7k2");
    cr_assert_str_eq(p->uid, "4f0c-11");
    cr_assert_str_eq(p->resource_version, "9120");
    cr_assert_str_eq(p->creation_timestamp, "2026-12-01T10:00:00Z");
    cr_assert_str_eq(p->status_phase, "Running");
    cr_assert_not(p->deleting);
    cr_assert_not(p->ready_condition, "Ready is False");
    cr_assert(p->has_container_statuses);
    cr_assert_eq(p->n_labels, 3);
    cr_assert_str_eq(pc_kube_pod_label(p, "podclaim.io/phase"), "Stopping");
    cr_assert_str_eq(pc_kube_pod_label(p, "team"), "ml");
    cr_assert_null(pc_kube_pod_label(p, "absent"));
    cr_assert_eq(p->n_annotations, 2);
    const pc_kube_annotation *a = pc_kube_pod_annotation(p, "note");
    cr_assert(a);
    cr_assert_eq(a->value_hash, pc_kube_value_hash("\xc3\xa9t\xc3\xa9"), "escapes decoded");
    cr_assert_eq(p->n_containers, 2);
    cr_assert_str_eq(p->containers[1].name, "side");
    cr_assert_str_eq(p->containers[1].image, "envoy:1");
    cr_assert_eq(p->n_statuses, 2);
    cr_assert_str_eq(p->statuses[0].image, "python:3.11");
    cr_assert_not(p->statuses[0].ready);
    cr_assert(p->statuses[1].ready);
    cr_assert_eq(p->n_owners, 1);
    cr_assert_str_eq(p->owners[0].key, "SandboxPool");
    cr_assert_str_eq(p->owners[0].value, "py");
    pc_kube_pod_free(p);
}

Test(kubepod, deletion_readiness_absent_fields_and_a_key_given_twice)
{
    const char *j = "{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"labels\":{\"k\":\"1\","
                    "\"k\":\"2\"},\"deletionTimestamp\":\"2026-12-01T10:00:00Z\",\"uid\":null},"
                    "\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}";
    pc_kube_pod *p;
    char err[256];
    cr_assert_eq(pc_kube_pod_decode(j, strlen(j), &p, err, sizeof(err)), 0, "%s", err);
    cr_assert(p->deleting);
    cr_assert(p->ready_condition);
    cr_assert_not(p->has_container_statuses);
    cr_assert_str_eq(p->uid, "", "null reads as absent");
    cr_assert_str_eq(p->status_phase, "");
    cr_assert_str_eq(pc_kube_pod_label(p, "k"), "2", "the last of duplicate keys, as Go keeps");
    cr_assert_eq(p->n_containers, 0);
    pc_kube_pod_free(p);
}

Test(kubepod, an_annotation_bigger_than_the_scratch_buffer_is_hashed_whole)
{
    size_t n = 200000;
    char *v = malloc(n + 1);
    memset(v, 'x', n);
    v[n] = '\0';
    v[n - 1] = 'y';
    char *j = malloc(n + 256);
    int len = snprintf(j, n + 256,
                       "{\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"annotations\":{"
                       "\"kubectl.kubernetes.io/last-applied-configuration\":\"%s\"}}}",
                       v);
    pc_kube_pod *p;
    char err[256];
    cr_assert_eq(pc_kube_pod_decode(j, (size_t)len, &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(p->annotations[0].value_hash, pc_kube_value_hash(v));
    pc_kube_pod_free(p);
    free(j);
    free(v);
}

Test(kubepod, every_truncation_and_a_pod_without_a_name_are_errors)
{
    pc_kube_pod *p;
    char err[256];
    size_t n = strlen(POD);
    for (size_t cut = 0; cut < n; cut++) {
        /* a copy of exactly cut bytes: an over-read is caught by ASan */
        char *b = malloc(cut ? cut : 1);
        memcpy(b, POD, cut);
        int rc = pc_kube_pod_decode(b, cut, &p, err, sizeof(err));
        cr_assert_eq(rc, -EBADMSG, "a pod cut at %zu bytes gave %d", cut, rc);
        cr_assert_null(p);
        free(b);
    }
    const char *bad[] = {"[]", "{\"metadata\":{\"name\":\"a\"},}", "{\"metadata\":{\"name\":a}}",
                         "{\"metadata\":{}} x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        cr_assert_eq(pc_kube_pod_decode(bad[i], strlen(bad[i]), &p, err, sizeof(err)), -EBADMSG,
                     "%s", bad[i]);
    const char *noname = "{\"metadata\":{\"namespace\":\"n\"}}";
    cr_assert_eq(pc_kube_pod_decode(noname, strlen(noname), &p, err, sizeof(err)), -EINVAL);
    cr_assert(strstr(err, "metadata.name"), "%s", err);
}

static int collect(void *arg, const char *item, size_t len)
{
    char *names = arg;
    pc_kube_pod *p;
    char err[128];
    if (pc_kube_pod_decode(item, len, &p, err, sizeof(err)))
        return -EPROTO;
    strcat(names, p->name);
    strcat(names, ",");
    pc_kube_pod_free(p);
    return 0;
}

Test(kubepod, list_pages_and_watch_events_are_split_without_a_tree)
{
    const char *page = "{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":\"a\","
                       "\"namespace\":\"n\"}} , {\"metadata\":{\"name\":\"b\",\"namespace\":\"n\"}}"
                       "],\"metadata\":{\"resourceVersion\":\"77\",\"continue\":\"tok\"}}";
    char names[64] = "", rv[32], cont[32];
    cr_assert_eq(pc_kube_list_scan(page, strlen(page), collect, names, rv, sizeof(rv), cont,
                                   sizeof(cont)),
                 0);
    cr_assert_str_eq(names, "a,b,");
    cr_assert_str_eq(rv, "77");
    cr_assert_str_eq(cont, "tok");
    const char *empty = "{\"metadata\":{\"resourceVersion\":\"5\"},\"items\":null}";
    names[0] = '\0';
    cr_assert_eq(pc_kube_list_scan(empty, strlen(empty), collect, names, rv, sizeof(rv), cont,
                                   sizeof(cont)),
                 0);
    cr_assert_str_eq(cont, "");
    const char *norv = "{\"items\":[]}";
    cr_assert_eq(pc_kube_list_scan(norv, strlen(norv), collect, names, rv, sizeof(rv), cont,
                                   sizeof(cont)),
                 -ENOENT);

    const char *ev = "{\"type\":\"MODIFIED\",\"object\": {\"metadata\":{\"name\":\"a\"}} }";
    char type[16];
    const char *obj;
    size_t olen;
    cr_assert_eq(pc_kube_watch_event_scan(ev, strlen(ev), type, sizeof(type), &obj, &olen), 0);
    cr_assert_str_eq(type, "MODIFIED");
    cr_assert_eq(olen, strlen("{\"metadata\":{\"name\":\"a\"}}"));
    cr_assert_eq(memcmp(obj, "{\"metadata\"", 11), 0);
    const char *bm = "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{"
                     "\"resourceVersion\":\"12\"}}}";
    cr_assert_eq(pc_kube_watch_event_scan(bm, strlen(bm), type, sizeof(type), &obj, &olen), 0);
    cr_assert_eq(pc_kube_object_rv(obj, olen, rv, sizeof(rv)), 2);
    cr_assert_str_eq(rv, "12");
    const char *cut = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{}";
    cr_assert_eq(pc_kube_watch_event_scan(cut, strlen(cut), type, sizeof(type), &obj, &olen),
                 -EBADMSG);
    const char *noobj = "{\"type\":\"ADDED\"}";
    cr_assert_eq(pc_kube_watch_event_scan(noobj, strlen(noobj), type, sizeof(type), &obj, &olen),
                 -ENOENT);
}
