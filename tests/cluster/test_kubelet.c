/* kapi-sim --kubelet-only: no pool controller; pods are run as a kubelet would run them. */
#include "../kube/ksim.h"
#include "common.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static ksim sim;

/* Each test starts from zero: under ThreadSanitizer the tests run one after another in one
 * process (tests/tsan-runner), not one process each as Criterion runs them. */
static void setup(void)
{
    memset(&sim, 0, sizeof(sim));
}

static void fini(void)
{
    ksim_stop(&sim);
}

static json_t *get_pod(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/namespaces/default/pods/%s", name);
    return ksim_json(&sim, "GET", path, NULL);
}

static const char *cond(const json_t *pod, const char *type)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(json_object_get(pod, "status"), "conditions"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "type")) ?: "", type) == 0)
            return json_string_value(json_object_get(c, "status"));
    }
    return NULL;
}

static bool pod_ready(const char *name)
{
    json_t *p = get_pod(name);
    bool r = p && cond(p, "Ready") && strcmp(cond(p, "Ready"), "True") == 0;
    json_decref(p);
    return r;
}

static const char *status_image(const json_t *pod, char *buf, size_t len)
{
    json_t *cs =
            json_array_get(json_object_get(json_object_get(pod, "status"), "containerStatuses"), 0);
    snprintf(buf, len, "%s", json_string_value(json_object_get(cs, "image")) ?: "");
    return buf;
}

static void create_pod(const char *name, const char *annotations)
{
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\","
             "\"labels\":{\"podclaim.io/pool\":\"web\",\"podclaim.io/phase\":\"Starting\"},"
             "\"annotations\":%s},\"spec\":{\"containers\":[{\"name\":\"main\","
             "\"image\":\"img:1\"}]}}",
             name, annotations);
    json_t *p = ksim_json(&sim, "POST", "/api/v1/namespaces/default/pods", body);
    cr_assert(p, "create %s", name);
    json_decref(p);
}

Test(kubelet, pods_start_restart_on_image_change_and_the_pool_controller_stays_out, .init = setup,
     .fini = fini, .timeout = 30)
{
    const char *args[] = {"--kubelet-only", "--warmup-ms",   "50", "--restart-ms", "100",
                          "--pool",         "default/web=3", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    create_pod("broken", "{\"kapi-sim.podclaim.io/never-ready\":\"true\"}");
    create_pod("good", "{}");
    cr_assert(PC_TEST_WAIT(pod_ready("good"), 10000), "good pod never became Ready");
    /* the start timers fire in creation order: broken was started first, and stays unready */
    json_t *b = get_pod("broken");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(b, "status"), "phase")),
                     "Running");
    cr_assert_str_eq(cond(b, "Ready"), "False", "a never-ready pod became Ready");
    json_decref(b);
    /* the kubelet never touches podclaim.io labels: good is still Starting */
    json_t *g = get_pod("good");
    cr_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(json_object_get(g, "metadata"), "labels"),
                             "podclaim.io/phase")),
                     "Starting");
    char img[64];
    cr_assert_str_eq(status_image(g, img, sizeof(img)), "img:1");
    json_decref(g);

    /* an image change restarts the container: Ready=False at once, then Ready with it */
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &c), 0);
    const char *patch = "{\"spec\":{\"containers\":[{\"name\":\"main\",\"image\":\"img:2\"}]}}";
    pc_kube_response r;
    cr_assert_eq(pc_kube_conn_request(c, "PATCH", "/api/v1/namespaces/default/pods/good",
                                      "application/strategic-merge-patch+json", patch,
                                      strlen(patch), &r),
                 0);
    cr_assert_eq(r.status, 200, "%s", r.error);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
    cr_assert(PC_TEST_WAIT(!pod_ready("good"), 5000), "no restart after the image changed");
    cr_assert(PC_TEST_WAIT(pod_ready("good"), 5000), "not Ready again after the restart");
    g = get_pod("good");
    cr_assert_str_eq(status_image(g, img, sizeof(img)), "img:2");
    cr_assert_eq(
            json_integer_value(json_object_get(
                    json_array_get(
                            json_object_get(json_object_get(g, "status"), "containerStatuses"), 0),
                    "restartCount")),
            1);
    json_decref(g);
    /* the SandboxPool default/web (replicas 3) got no pods from kapi-sim */
    json_t *l = ksim_json(&sim, "GET",
                          "/api/v1/namespaces/default/pods?labelSelector=podclaim.io%2Fpool%3Dweb",
                          NULL);
    cr_assert_eq(json_array_size(json_object_get(l, "items")), 2,
                 "kapi-sim's pool controller created pods in --kubelet-only mode");
    json_decref(l);
}

Test(kubelet, claim_log_records_idle_to_claimed, .init = setup, .fini = fini, .timeout = 30)
{
    const char *args[] = {"--kubelet-only", "--warmup-ms", "10", NULL};
    cr_assert_eq(ksim_start(&sim, args, false, NULL, NULL), 0);
    create_pod("p", "{}");
    cr_assert(PC_TEST_WAIT(pod_ready("p"), 10000));
    pc_kube_conn *c;
    cr_assert_eq(pc_kube_conn_new(sim.admin, &c), 0);
    pc_kube_response r;
    const char *idle = "{\"metadata\":{\"labels\":{\"podclaim.io/phase\":\"Idle\"}}}";
    cr_assert_eq(pc_kube_conn_request(c, "PATCH", "/api/v1/namespaces/default/pods/p",
                                      "application/merge-patch+json", idle, strlen(idle), &r),
                 0);
    pc_kube_response_fini(&r);
    const char *claim = "{\"metadata\":{\"labels\":{\"podclaim.io/phase\":\"Running\"},"
                        "\"annotations\":{\"podclaim.io/claim-id\":\"c-1\"}}}";
    cr_assert_eq(pc_kube_conn_request(c, "PATCH", "/api/v1/namespaces/default/pods/p",
                                      "application/merge-patch+json", claim, strlen(claim), &r),
                 0);
    pc_kube_response_fini(&r);
    pc_kube_conn_free(c);
    json_t *log = ksim_json(&sim, "GET", "/sim/claims", NULL);
    cr_assert_eq(json_integer_value(json_object_get(log, "count")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(
                             json_array_get(json_object_get(log, "claims"), 0), "claimId")),
                     "c-1");
    json_decref(log);
}
