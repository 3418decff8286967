// Package cluster runs a real etcd and kube-apiserver on loopback for podclaim's tests: the
// reference kapi-sim is held to (DESIGN.md §5).
//
// Start generates a CA and a serving certificate for 127.0.0.1, a static bearer token in the
// system:masters group, the service-account key pair kube-apiserver insists on, then starts etcd
// (plain HTTP on loopback, data in a temporary folder) and kube-apiserver (HTTPS) on ephemeral
// ports, and waits for /readyz. Admission fits a cluster without nodes or controllers: the
// ServiceAccount plugin is off (no controller creates the "default" ServiceAccount) and so is
// DefaultTolerationSeconds (it would add tolerations a pod spec did not ask for).
package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Config says where the binaries are and where the cluster keeps its files.
type Config struct {
	BinDir string    // holds kube-apiserver and etcd
	Dir    string    // certificates, tokens, etcd data, logs, kubeconfig (created)
	Log    io.Writer // progress lines; nil = discard
	// AuditLog: kube-apiserver writes one JSON line per write request (create, update,
	// patch, delete) to Dir/audit.log, so a benchmark can count API writes at the server,
	// per user. Off for the test suites (it costs every write a synchronous log line).
	AuditLog bool
	// Users: extra bearer tokens, one per name (group system:masters), each with its own
	// kubeconfig Dir/kubeconfig-NAME; the audit log tells their requests apart by name.
	Users []string
}

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	URL        string // https://127.0.0.1:PORT
	Token      string // bearer token, group system:masters
	CAFile     string // PEM of the CA that signed the serving certificate
	Kubeconfig string // a kubeconfig for URL with Token
	Dir        string
	AuditPath  string            // Dir/audit.log when Config.AuditLog; "" otherwise
	UserTokens map[string]string // Config.Users -> their tokens

	etcd, api *exec.Cmd
	etcdDone  chan error
	apiDone   chan error
}

// Start brings the cluster up or returns an error having stopped whatever it started.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster dir %s: %w", cfg.Dir, err)
	}
	c := &Cluster{Dir: cfg.Dir, CAFile: filepath.Join(cfg.Dir, "ca.crt"), UserTokens: map[string]string{}}
	if err := c.writeSecrets(cfg.Users); err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, err := freePorts3()
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	c.etcd, c.etcdDone, err = startProc(filepath.Join(cfg.BinDir, "etcd"), filepath.Join(cfg.Dir, "etcd.log"),
		"--name", "realk8s",
		"--data-dir", filepath.Join(cfg.Dir, "etcd-data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-advertise-peer-urls", "http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--initial-cluster", "realk8s=http://127.0.0.1:"+strconv.Itoa(peerPort),
		"--unsafe-no-fsync", // test data: durability buys nothing and costs the shared disk
		"--log-level", "warn")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logw, "etcd pid %d on %s\n", c.etcd.Process.Pid, etcdURL)
	if err := waitHTTP(ctx, etcdURL+"/health", nil, 30*time.Second, c.etcdDone); err != nil {
		c.Stop()
		return nil, fmt.Errorf("etcd did not become healthy (see %s/etcd.log): %w", cfg.Dir, err)
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	c.Kubeconfig = filepath.Join(cfg.Dir, "kubeconfig")
	d := cfg.Dir
	var audit []string
	if cfg.AuditLog {
		c.AuditPath = filepath.Join(d, "audit.log")
		if err := os.WriteFile(filepath.Join(d, "audit-policy.yaml"), []byte(auditPolicy), 0o600); err != nil {
			c.Stop()
			return nil, fmt.Errorf("write audit policy: %w", err)
		}
		// blocking mode: the line is written before the response, so a reader that saw a
		// response sees its line (batch mode would delay it by up to a second)
		audit = []string{"--audit-policy-file", filepath.Join(d, "audit-policy.yaml"),
			"--audit-log-path", c.AuditPath, "--audit-log-mode", "blocking", "--audit-log-format", "json",
			// 0 would mean lumberjack's default, 100 MB: a rotation in the middle of a
			// benchmark cell would lose its lines (a megabyte-sized cap of 1 TB never rotates)
			"--audit-log-maxsize", "1048576"}
	}
	c.api, c.apiDone, err = startProc(filepath.Join(cfg.BinDir, "kube-apiserver"), filepath.Join(d, "kube-apiserver.log"),
		append([]string{"--etcd-servers", etcdURL,
			"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
			"--secure-port", strconv.Itoa(apiPort),
			"--tls-cert-file", filepath.Join(d, "serving.crt"),
			"--tls-private-key-file", filepath.Join(d, "serving.key"),
			"--client-ca-file", c.CAFile,
			"--token-auth-file", filepath.Join(d, "tokens.csv"),
			"--authorization-mode", "RBAC",
			"--service-account-issuer", "https://kubernetes.default.svc",
			"--service-account-key-file", filepath.Join(d, "sa.pub"),
			"--service-account-signing-key-file", filepath.Join(d, "sa.key"),
			"--service-cluster-ip-range", "10.96.0.0/24",
			"--disable-admission-plugins", "ServiceAccount,DefaultTolerationSeconds",
			"--endpoint-reconciler-type", "none",
			"--profiling=false",
			"-v", "0"}, audit...)...)
	if err != nil {
		c.Stop()
		return nil, err
	}
	fmt.Fprintf(logw, "kube-apiserver pid %d on %s\n", c.api.Process.Pid, c.URL)
	if err := waitHTTP(ctx, c.URL+"/readyz", c, 120*time.Second, c.apiDone); err != nil {
		c.Stop()
		return nil, fmt.Errorf("kube-apiserver did not become ready (see %s/kube-apiserver.log): %w", d, err)
	}
	if err := c.writeKubeconfig(c.Kubeconfig, c.Token); err != nil {
		c.Stop()
		return nil, err
	}
	for _, u := range cfg.Users {
		if err := c.writeKubeconfig(c.UserKubeconfig(u), c.UserTokens[u]); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// HTTPClient trusts the cluster's CA; requests still need the bearer token.
func (c *Cluster) HTTPClient() (*http.Client, error) {
	pemCA, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		return nil, errors.New("CA file holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64}
	return &http.Client{Transport: tr}, nil
}

// Stop ends kube-apiserver, then etcd (SIGTERM, then SIGKILL after 10 s) and waits for both.
func (c *Cluster) Stop() error {
	var errs []error
	if c.api != nil {
		errs = append(errs, stopProc(c.api, c.apiDone))
	}
	if c.etcd != nil {
		errs = append(errs, stopProc(c.etcd, c.etcdDone))
	}
	return errors.Join(errs...)
}

func startProc(bin, logPath string, args ...string) (*exec.Cmd, chan error, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("log %s: %w", logPath, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// The children die with us even when we are killed (no orphaned servers on the machine).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); lf.Close() }()
	return cmd, done, nil
}

func stopProc(cmd *exec.Cmd, done chan error) error {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s ignored SIGTERM for 10 s; killed", filepath.Base(cmd.Path))
	}
}

func waitHTTP(ctx context.Context, url string, c *Cluster, limit time.Duration, exited chan error) error {
	client := &http.Client{Timeout: 2 * time.Second}
	if c != nil {
		hc, err := c.HTTPClient()
		if err != nil {
			return err
		}
		hc.Timeout = 2 * time.Second
		client = hc
	}
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if c != nil {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s", url, resp.Status)
		} else {
			last = err
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("process exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer in %s: %w", limit, last)
}

func freePorts3() (int, int, int, error) {
	var ports [3]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, 0, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], ports[2], nil
}

// auditPolicy logs write requests only, at Metadata level (who, verb, object, status code).
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
`

// UserKubeconfig is the kubeconfig of an extra user named in Config.Users.
func (c *Cluster) UserKubeconfig(user string) string {
	return filepath.Join(c.Dir, "kubeconfig-"+user)
}

// writeSecrets makes the CA, the serving certificate, the token file and the SA key pair.
func (c *Cluster) writeSecrets(users []string) error {
	d := c.Dir
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "realk8s-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default.svc"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	c.Token = fmt.Sprintf("%x", tok)
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	files := []struct {
		name, typ string
		der       []byte
	}{
		{"ca.crt", "CERTIFICATE", caDER},
		{"serving.crt", "CERTIFICATE", srvDER},
		{"serving.key", "EC PRIVATE KEY", srvKeyDER},
		{"sa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)},
		{"sa.pub", "PUBLIC KEY", saPub},
	}
	for _, f := range files {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(d, f.name), b, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	line := c.Token + ",realk8s-admin,realk8s-admin,\"system:masters\"\n"
	for _, u := range users {
		t := make([]byte, 24)
		if _, err := rand.Read(t); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		c.UserTokens[u] = fmt.Sprintf("%x", t)
		line += fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", c.UserTokens[u], u, u)
	}
	if err := os.WriteFile(filepath.Join(d, "tokens.csv"), []byte(line), 0o600); err != nil {
		return fmt.Errorf("write tokens.csv: %w", err)
	}
	return nil
}

func (c *Cluster) writeKubeconfig(path, token string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: realk8s
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: realk8s-admin
  user:
    token: %s
contexts:
- name: realk8s
  context:
    cluster: realk8s
    user: realk8s-admin
    namespace: default
current-context: realk8s
`, c.URL, c.CAFile, token)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
