// Package deploy holds the deployment files (image, Compose, Kubernetes,
// systemd, dashboards); its test checks the Kubernetes manifests against the
// Kubernetes API types and against the flags of `rhizon node`.
package deploy

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// nodeFlags parses cmd/rhizon/node.go and returns every flag of `rhizon node`
// with its default value when it is a string literal (or a variable first
// assigned one in the same function).
func nodeFlags(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("..", "cmd", "rhizon", "node.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]string{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "register" || fn.Body == nil {
			continue
		}
		vars := map[string]string{} // first literal assigned to each local
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				if n.Tok != token.DEFINE || len(n.Lhs) != len(n.Rhs) {
					return true
				}
				for i, l := range n.Lhs {
					id, ok1 := l.(*ast.Ident)
					lit, ok2 := n.Rhs[i].(*ast.BasicLit)
					if ok1 && ok2 && lit.Kind == token.STRING {
						if _, seen := vars[id.Name]; !seen {
							vars[id.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Var") && !strings.HasSuffix(sel.Sel.Name, "VarP") || len(n.Args) < 3 {
					return true
				}
				lit, ok := n.Args[1].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				name, _ := strconv.Unquote(lit.Value)
				def := ""
				switch v := n.Args[2].(type) {
				case *ast.BasicLit:
					def, _ = strconv.Unquote(v.Value)
				case *ast.Ident:
					def = vars[v.Name]
				}
				flags[name] = def
			}
			return true
		})
	}
	for _, want := range []string{"node-id", "grpc-addr", "http-addr", "raft-addr", "gossip-addr", "join", "advertise-host"} {
		if _, ok := flags[want]; !ok {
			t.Fatalf("flag --%s not found in cmd/rhizon/node.go (parser out of date?); found %v", want, flags)
		}
	}
	return flags
}

// envFlag maps RHIZON_GRPC_ADDR to grpc-addr.
func envFlag(env string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(env, "RHIZON_"), "_", "-"))
}

type manifests struct {
	configMaps []*corev1.ConfigMap
	secrets    []*corev1.Secret
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	sets       []*appsv1.StatefulSet
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// load decodes every document of deploy/k8s/*.yaml strictly (unknown or
// duplicate fields are errors) into its k8s.io/api type.
func load(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	var m manifests
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSep.Split(string(raw), -1) {
			if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
				continue
			}
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s doc %d: %v", file, i, err)
			}
			var obj any
			switch meta.APIVersion + "/" + meta.Kind {
			case "v1/ConfigMap":
				o := &corev1.ConfigMap{}
				m.configMaps, obj = append(m.configMaps, o), o
			case "v1/Secret":
				o := &corev1.Secret{}
				m.secrets, obj = append(m.secrets, o), o
			case "v1/Service":
				o := &corev1.Service{}
				m.services, obj = append(m.services, o), o
			case "policy/v1/PodDisruptionBudget":
				o := &policyv1.PodDisruptionBudget{}
				m.pdbs, obj = append(m.pdbs, o), o
			case "apps/v1/StatefulSet":
				o := &appsv1.StatefulSet{}
				m.sets, obj = append(m.sets, o), o
			default:
				t.Fatalf("%s doc %d: unexpected %s %s (add it to the test)", file, i, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s doc %d (%s): strict decode: %v", file, i, meta.Kind, err)
			}
		}
	}
	return m
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

func TestKubernetesManifests(t *testing.T) {
	flags := nodeFlags(t)
	m := load(t)
	if len(m.sets) != 1 || len(m.pdbs) != 1 || len(m.configMaps) != 1 || len(m.secrets) != 1 {
		t.Fatalf("want 1 StatefulSet, PodDisruptionBudget, ConfigMap and Secret; got %d, %d, %d, %d",
			len(m.sets), len(m.pdbs), len(m.configMaps), len(m.secrets))
	}
	sts, cm, sec := m.sets[0], m.configMaps[0], m.secrets[0]
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("StatefulSet replicas: want 3")
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: nodes are ready only once the cluster exists, use Parallel", sts.Spec.PodManagementPolicy)
	}
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("no volumeClaimTemplates")
	}
	tmplLabels := sts.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if tmplLabels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if sts.Spec.Selector == nil || !matches(sts.Spec.Selector.MatchLabels) {
		t.Errorf("StatefulSet selector does not match the pod template labels")
	}
	pdb := m.pdbs[0]
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.Selector == nil || !matches(pdb.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget: want maxUnavailable 1 selecting the StatefulSet pods")
	}

	// Headless service named by the StatefulSet.
	var headless, client *corev1.Service
	for _, s := range m.services {
		if s.Name == sts.Spec.ServiceName {
			headless = s
		} else {
			client = s
		}
		if !matches(s.Spec.Selector) {
			t.Errorf("Service %s does not select the StatefulSet pods", s.Name)
		}
	}
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Fatalf("StatefulSet serviceName %q: want a headless Service (clusterIP None, publishNotReadyAddresses)", sts.Spec.ServiceName)
	}
	if client == nil {
		t.Fatalf("no client Service")
	}

	if len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container")
	}
	c := sts.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "node" {
		t.Fatalf("container args %v: want `node ...`", c.Args)
	}

	// Effective flag values: defaults, then the ConfigMap, env, then args.
	val := map[string]string{}
	for k, v := range flags {
		val[k] = v
	}
	secretKeys := map[string]bool{}
	for k := range sec.StringData {
		secretKeys[k] = true
	}
	for k := range sec.Data {
		secretKeys[k] = true
	}
	clientEnv := map[string]bool{"RHIZON_TOKEN": true, "RHIZON_ADDR": true} // read by `rhizon drain` in preStop
	setEnv := func(where, k, v string) {
		if !strings.HasPrefix(k, "RHIZON_") || clientEnv[k] {
			return
		}
		f := envFlag(k)
		if _, ok := flags[f]; !ok {
			t.Errorf("%s: %s sets --%s, which `rhizon node` does not have", where, k, f)
			return
		}
		val[f] = v
	}
	for k, v := range cm.Data {
		setEnv("ConfigMap "+cm.Name, k, v)
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil || ef.ConfigMapRef.Name != cm.Name {
			t.Errorf("envFrom %+v: want the ConfigMap %s", ef, cm.Name)
		}
	}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.FieldRef != nil:
				v = "$(" + e.ValueFrom.FieldRef.FieldPath + ")"
			case e.ValueFrom.SecretKeyRef != nil:
				if e.ValueFrom.SecretKeyRef.Name != sec.Name || !secretKeys[e.ValueFrom.SecretKeyRef.Key] {
					t.Errorf("env %s: secret %s key %s not in the manifests", e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
				v = "<secret>"
			}
		}
		setEnv("env", e.Name, v)
	}
	for _, a := range c.Args[1:] {
		name, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("arg %q: use --flag=value", a)
			continue
		}
		if _, known := flags[name]; !known {
			t.Errorf("arg --%s: `rhizon node` has no such flag", name)
		}
		val[name] = v
	}
	if val["node-id"] != "$(metadata.name)" {
		t.Errorf("node id %q: want the pod name (RHIZON_NODE_ID from metadata.name)", val["node-id"])
	}
	// Embedded NATS clustered over routes: the route port must be open, and
	// the default routes (the --join hosts) point at that same port.
	if val["nats-addr"] == "off" || val["nats-cluster-addr"] == "" {
		t.Errorf("--nats-addr %q --nats-cluster-addr %q: want the embedded NATS clustered", val["nats-addr"], val["nats-cluster-addr"])
	}
	if val["nats-routes"] == "" && !strings.Contains(val["join"], ".rhizon-headless.") {
		t.Errorf("no --nats-routes and --join %q does not name the pods: routes would be wrong", val["join"])
	}
	if !strings.HasPrefix(val["token-file"], "/etc/rhizon/") {
		t.Errorf("--token-file %q: want the Secret mount /etc/rhizon", val["token-file"])
	}

	// Ports: the container ports are the node's listen ports.
	want := map[string]int32{
		"grpc": port(t, val["grpc-addr"]), "http": port(t, val["http-addr"]),
		"raft": port(t, val["raft-addr"]), "gossip": port(t, val["gossip-addr"]), "gossip-udp": port(t, val["gossip-addr"]),
		"nats": port(t, val["nats-addr"]), "nats-route": port(t, val["nats-cluster-addr"]),
	}
	byName := map[string]int32{}
	for _, p := range c.Ports {
		byName[p.Name] = p.ContainerPort
	}
	for name, p := range want {
		if byName[name] != p {
			t.Errorf("container port %s = %d, node listens on %d", name, byName[name], p)
		}
	}
	resolve := func(p intstr.IntOrString) int32 {
		if p.Type == intstr.String {
			return byName[p.StrVal]
		}
		return p.IntVal
	}
	for _, s := range m.services {
		for _, sp := range s.Spec.Ports {
			tp := sp.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(sp.Port)
			}
			if resolve(tp) == 0 || want[sp.Name] != 0 && resolve(tp) != want[sp.Name] {
				t.Errorf("Service %s port %s: target %s is not the node's %s port", s.Name, sp.Name, tp.String(), sp.Name)
			}
		}
	}

	// Stable names: advertise host and join addresses via the headless service.
	dns := func(pod string) string {
		return pod + "." + headless.Name + ".$(POD_NAMESPACE).svc"
	}
	if got := val["advertise-host"]; got != dns("$(POD_NAME)") {
		t.Errorf("--advertise-host %q: want %q", got, dns("$(POD_NAME)"))
	}
	joins := strings.Split(val["join"], ",")
	if len(joins) == 0 || joins[0] == "" {
		t.Errorf("no --join")
	}
	for _, j := range joins {
		h, p, err := net.SplitHostPort(j)
		if err != nil {
			t.Errorf("join %q: %v", j, err)
			continue
		}
		ok := false
		for i := int32(0); i < *sts.Spec.Replicas; i++ {
			ok = ok || h == dns(fmt.Sprintf("%s-%d", sts.Name, i))
		}
		if !ok || p != strconv.Itoa(int(want["gossip"])) {
			t.Errorf("join %q: want <pod>.%s...:%d of a StatefulSet pod", j, headless.Name, want["gossip"])
		}
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, v := range []string{"POD_NAME", "POD_NAMESPACE"} {
		if !env[v] {
			t.Errorf("args use $(%s) but the container does not define it", v)
		}
	}

	// Probes: readiness on /readyz (503 only when the node FAILED, so a
	// degraded node stays in service), liveness on /healthz.
	if r := c.ReadinessProbe; r == nil || r.HTTPGet == nil || r.HTTPGet.Path != "/readyz" || resolve(r.HTTPGet.Port) != want["http"] {
		t.Errorf("readinessProbe: want GET /readyz on the HTTP port %d", want["http"])
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || resolve(p.HTTPGet.Port) != want["http"] {
			t.Errorf("%sProbe: want GET /healthz on the HTTP port %d", name, want["http"])
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("no cpu/memory requests")
	}

	// preStop drains the node (system token from the Secret).
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatalf("no preStop exec hook")
	}
	cmd := strings.Join(c.Lifecycle.PreStop.Exec.Command, " ")
	if !strings.Contains(cmd, " drain ") || !strings.Contains(cmd, "--wait") || !env["RHIZON_TOKEN"] {
		t.Errorf("preStop %q: want `rhizon drain --wait` with RHIZON_TOKEN", cmd)
	}
	if strings.Contains(cmd, "$(") {
		t.Errorf("preStop %q: exec hooks get no $(VAR) expansion", cmd)
	}
	if g := sts.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g < 60 {
		t.Errorf("terminationGracePeriodSeconds too short for the drain")
	}
}

// TestSystemdEnv checks that every RHIZON_* variable of the systemd
// environment file (commented examples included) is a flag of `rhizon node`.
func TestSystemdEnv(t *testing.T) {
	flags := nodeFlags(t)
	raw, err := os.ReadFile(filepath.Join("systemd", "rhizon.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range regexp.MustCompile(`(?m)^#?(RHIZON_[A-Z_]+)=`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := flags[envFlag(k[1])]; !ok {
			t.Errorf("rhizon.env: %s is not a flag of rhizon node", k[1])
		}
	}
}

// TestComposeEnv checks that every RHIZON_* variable the Compose file sets is
// a flag of `rhizon node`.
func TestComposeEnv(t *testing.T) {
	flags := nodeFlags(t)
	raw, err := os.ReadFile(filepath.Join("compose", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range regexp.MustCompile(`(?m)^\s+(RHIZON_[A-Z_]+):`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := flags[envFlag(k[1])]; !ok {
			t.Errorf("docker-compose.yml: %s is not a flag of rhizon node", k[1])
		}
	}
	for _, k := range regexp.MustCompile(`"--([a-z-]+)"`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := flags[k[1]]; !ok {
			t.Errorf("docker-compose.yml: --%s is not a flag of rhizon node", k[1])
		}
	}
}
