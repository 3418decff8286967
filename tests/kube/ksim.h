/* Test fixture: run kapi-sim (the built binary) on an ephemeral loopback port.
 *
 * The child gets PR_SET_PDEATHSIG(SIGKILL), so it dies with the test process even when an
 * assertion ends the test early; ksim_stop() stops it explicitly on the normal path.
 */
#ifndef PODCLAIM_TESTS_KSIM_H
#define PODCLAIM_TESTS_KSIM_H

#include <podclaim/kube.h>

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct ksim_filler ksim_filler;

typedef struct ksim {
    pid_t pid;
    int port;
    char url[128];         /* http(s)://127.0.0.1:<port> */
    char dir[64];          /* scratch folder (port file, certificates) */
    pc_kube_client *admin; /* plain client for /sim and API calls by the test itself */
    ksim_filler *filler;   /* the pod-filler, or NULL */
} ksim;

/* Start kapi-sim with extra args (NULL-terminated); tls: serve https (args must carry
 * --tls-cert/--tls-key), token: the --token given (the admin client uses it).
 *
 * kapi-sim plays the kubelet only: nothing in it creates or recycles pool pods (podclaimd's
 * pool controller does, issue 13). For kube-level tests that need idle pods without podclaimd,
 * the fixture plays a small pool controller of its own, the pod-filler: for each
 * `--pool NS/NAME=N` it creates N pods labelled podclaim.io/pool=NAME, phase Idle (kapi-sim's
 * kubelet makes them Running and Ready after --warmup-ms), replaces deleted ones, and turns a
 * claimed pod back to Idle --hold-ms + --stop-ms after its claim, once Ready on the claim's
 * images (defaults 500 and 20, as
 * kapi-sim's old controller; the claim log /sim/claims tells it which pods were claimed), with
 * one PATCH guarded by the pod's resourceVersion. `--kubelet-only` turns the filler off (tests
 * where podclaimd makes the pods, or nobody does). Against the real server the front gets the
 * arguments unchanged and plays this part itself.
 * Returns 0 or -1 (message printed). */
int ksim_start(ksim *k, const char *const *args, bool tls, const char *ca_file, const char *token);
void ksim_stop(ksim *k);

/* Stop the pod-filler now (no more top-ups, no recycling; ksim_stop still stops kapi-sim).
 * For a benchmark whose pods never recycle once they are Idle: the filler's LIST of every
 * pool each 100 ms and its claim-log poll each 5 ms would load the machine during the
 * measurement (with 25,000 pods, most of a core between the filler and its server side). */
void ksim_filler_stop(ksim *k);

/* Whether the tests run against the real kube-apiserver (PODCLAIM_KUBE_SERVER=real with
 * REALK8S_BIN and KUBECONFIG set); ksim_start then starts `realk8s front` in kapi-sim's place. */
bool ksim_real(void);

/* Blocking helpers on the admin client. ksim_json returns the parsed 2xx body or NULL. */
json_t *ksim_json(ksim *k, const char *method, const char *path, const char *body);
int ksim_put_faults(ksim *k, const char *json);

/* A fresh scratch folder under /tmp for files a test makes (certificates). */
void ksim_mkdir(char *dir, size_t len);

#endif
