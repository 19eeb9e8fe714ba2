package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rhizon/rhizon/internal/testcerts"
)

// The web console (package console) in a real headless Chromium, against a
// real `rhizon dev` process and a real 3-node cluster.

type css = chromedp.CSS

// postJSON sends body to a node's HTTP API with token and fails t unless it
// answers 200.
func postJSON(t *testing.T, hc *http.Client, base, path, token, body string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s %s: %d %s", path, body, resp.StatusCode, b)
	}
	return string(b)
}

// login types the token and presses Enter: no mouse.
func (p *page) login(base, token, who string) {
	p.t.Helper()
	start := time.Now()
	p.do("open the console", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(css("#token")))
	p.t.Logf("console loaded in %v", time.Since(start))
	p.do("type the token", chromedp.SendKeys(css("#token"), token+"\r"))
	p.until("logged in as "+who, 10*time.Second, `document.getElementById("whoami").textContent.startsWith(`+js(who)+`)`)
	if eval[string](p, `sessionStorage.getItem("rhizon.token")`) != token {
		p.t.Fatal("the token is not in session storage")
	}
}

// shardsWithLeader is the JS count of shard rows that show a leader.
const shardsWithLeader = `[...document.querySelectorAll("#shards-table tr[data-shard]")].filter(r => r.dataset.leader).length`

func (p *page) sendForm(fields map[string]string) {
	p.t.Helper()
	p.do("wait for the form", chromedp.WaitVisible(css("#send-form")))
	var set strings.Builder
	for _, k := range []string{"actor_type", "entity_id", "type", "payload", "expected_version", "correlation_id"} {
		fmt.Fprintf(&set, "document.getElementById(%s).value = %s;\n", js("send-"+k), js(fields[k]))
	}
	eval[bool](p, "(() => {"+set.String()+"return true; })()")
	p.do("send the form", chromedp.Click(css("#send-submit")))
}

func TestConsole_DevNode(t *testing.T) {
	t.Parallel()
	needBinary(t)
	findBrowser(t) // skip or fail before starting any process
	d := startDev(t, t.TempDir())
	p := newPage(t, 4*time.Minute, false)

	// First paint of the page, as the browser measured it: the best of up to
	// three loads, so that a moment of CPU starvation on a shared machine
	// does not decide it.
	best := 0.0
	for i := 0; i < 3 && (i == 0 || best > 1000); i++ {
		p.do("open the console", chromedp.Navigate(d.http+"/ui/"), chromedp.WaitVisible(css("#token")))
		fp := eval[float64](p, `(() => { const e = performance.getEntriesByName("first-contentful-paint")[0] || performance.getEntriesByName("first-paint")[0];
			return e ? e.startTime : performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd; })()`)
		t.Logf("first paint %.0f ms", fp)
		if i == 0 || fp < best {
			best = fp
		}
	}
	if best <= 0 || best > 1000 {
		t.Fatalf("first paint took %.0f ms, want under 1000", best)
	}
	external := eval[[]string](p, `performance.getEntriesByType("resource").map(r => r.name).filter(n => !n.startsWith(location.origin))`)
	if len(external) > 0 {
		t.Fatalf("the console loaded from elsewhere: %v", external)
	}

	// A refused token says so and keeps the login form.
	p.do("type a wrong token", chromedp.SendKeys(css("#token"), "not-the-token-0123456789\r"))
	p.until("refusal shown", 10*time.Second, `!document.getElementById("flash").hidden && document.getElementById("flash").textContent.includes("refused")`)

	p.login(d.http, d.token, "dev")
	p.until("every shard with a leader", 30*time.Second, shardsWithLeader+` === 4`)
	p.until("node dev alive", 10*time.Second, `document.querySelector('#nodes-table tr[data-node="dev"]')?.dataset.state === "alive"`)
	p.screenshot("cluster")

	// Keyboard: after logging in the focus is on the page's heading, and Tab
	// goes on from there; the focus order is the document's (no positive
	// tabindex), which starts with the skip link and the pages.
	if got := eval[string](p, `document.activeElement.tagName + ":" + document.activeElement.textContent`); got != "H1:Cluster" {
		t.Fatalf("after logging in the focus is on %q, want the page's heading", got)
	}
	p.do("tab", chromedp.KeyEvent("\t"))
	if got := eval[string](p, `document.activeElement.id`); got != "cluster-pause" {
		t.Fatalf("Tab from the heading reached #%s, want the Pause button", got)
	}
	order := eval[[]string](p, `[...document.querySelectorAll("a[href], button, input, textarea, select, [tabindex]")]
		.filter(e => e.tabIndex >= 0 && !e.closest("[hidden]")).slice(0, 7).map(e => e.textContent.trim() || e.id)`)
	if want := []string{"Skip to content", "Cluster", "Metrics", "Entities", "Send", "Dead letters", "Log out"}; fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("focus order %q, want %q", order, want)
	}
	if n := eval[int](p, `[...document.querySelectorAll("[tabindex]")].filter(e => e.tabIndex > 0).length`); n != 0 {
		t.Fatalf("%d elements with a positive tabindex", n)
	}
	// A reload logs in again from session storage.
	p.do("reload", chromedp.Reload())
	p.until("logged in again", 10*time.Second, `document.getElementById("whoami").textContent.startsWith("dev")`)
	// Enter on the Send link opens the page and moves focus to its heading.
	// Pressed again if the page did not change: a CI run once saw the key
	// go nowhere while the reloaded console was still drawing its first
	// page.
	for try := 1; ; try++ {
		p.do("focus Send", chromedp.Focus(css(`nav a[data-page="send"]`)), chromedp.KeyEvent("\r"))
		if try == 3 || p.within(5*time.Second, `location.hash === "#/send"`) {
			break
		}
	}
	p.until("send page with focus on its heading", 10*time.Second,
		`location.hash === "#/send" && document.activeElement && document.activeElement.tagName === "H1"`)
	if n := eval[int](p, `[...document.querySelectorAll("#send-form input, #send-form textarea")].filter(e => !e.labels || e.labels.length === 0).length`); n != 0 {
		t.Fatalf("%d form fields have no label", n)
	}

	// Send a command through the form.
	p.sendForm(map[string]string{"actor_type": "counter", "entity_id": "ui1", "type": "add", "payload": `{"amount":5}`})
	p.until("accepted", 20*time.Second, `document.querySelector("#send-status")?.dataset.status === "accepted"`)
	curl := eval[string](p, `document.getElementById("send-curl").textContent`)
	cli := eval[string](p, `document.getElementById("send-cli").textContent`)
	if !strings.Contains(curl, d.http+"/v1/submit") || !strings.Contains(curl, `"type":"cmd.counter.add"`) ||
		!strings.HasPrefix(cli, "rhizon send counter/ui1 cmd.counter.add '{\"amount\":5}' --idempotency-key 'ui-") {
		t.Fatalf("equivalents:\n%s\n%s", curl, cli)
	}
	p.screenshot("send")

	// Its event in the entity's history.
	p.do("open the entity", chromedp.Click(css("#send-entity-link")))
	p.until("event in the history", 20*time.Second, `document.querySelector('#history-table tr[data-event-type="evt.counter.added"]') !== null`)
	if st := eval[string](p, `document.getElementById("entity-state").textContent`); !strings.Contains(st, `"value": 5`) {
		t.Fatalf("state %q", st)
	}
	if v := eval[string](p, `document.getElementById("entity-version").textContent`); v != "1" {
		t.Fatalf("version %q, want 1", v)
	}

	// And in the live tail: the form's event from the oldest kept, then a
	// new one as it commits.
	p.do("tail the entity", chromedp.Click(css("#tail-from-beginning")), chromedp.Click(css("#tail-entity")))
	p.until("the form's event in the tail", 20*time.Second, `document.querySelectorAll('#tail li[data-event-type="evt.counter.added"]').length === 1`)
	postJSON(t, http.DefaultClient, d.http, "/v1/submit", d.token,
		`{"address":{"actor_type":"counter","entity_id":"ui1"},"type":"cmd.counter.add","payload":{"amount":2},"idempotency_key":"tail-2"}`)
	p.until("the new event in the tail", 20*time.Second, `document.querySelectorAll('#tail li[data-event-type="evt.counter.added"]').length === 2 &&
		document.querySelector('#tail li:last-child').textContent.includes('"value":7')`)
	p.screenshot("entities")
	// The whole workspace: another entity's event shows up too.
	// From the oldest kept event, still checked from the entity's tail (a
	// second click unchecked it, and the tail then began at its consumer's
	// creation, which an event committed right after could precede).
	if !eval[bool](p, `document.getElementById("tail-from-beginning").checked`) {
		t.Fatal("the tail's from-the-oldest box is not checked")
	}
	p.do("tail the workspace", chromedp.Click(css("#tail-workspace")))
	p.until("tailing the workspace", 10*time.Second, `document.getElementById("tail-state").textContent.startsWith("Tailing workspace")`)
	postJSON(t, http.DefaultClient, d.http, "/v1/submit", d.token,
		`{"address":{"actor_type":"counter","entity_id":"ws2"},"type":"cmd.counter.add","payload":{"amount":1},"idempotency_key":"ws2-1"}`)
	p.until("the other entity's event in the workspace tail", 20*time.Second, `[...document.querySelectorAll("#tail li a")].some(a => a.textContent === "counter/ws2")`)

	// A saga: its place command through the form, then its correlation link
	// leads to the other entities it touched.
	postJSON(t, http.DefaultClient, d.http, "/v1/submit", d.token,
		`{"address":{"actor_type":"inventory","entity_id":"wh1"},"type":"cmd.inventory.stock","payload":{"sku":"apple","qty":10},"idempotency_key":"stock-1"}`)
	postJSON(t, http.DefaultClient, d.http, "/v1/submit", d.token,
		`{"address":{"actor_type":"payment","entity_id":"acct1"},"type":"cmd.payment.deposit","payload":{"amount":1000},"idempotency_key":"dep-1"}`)
	p.do("open Send", chromedp.Click(css(`nav a[data-page="send"]`)), chromedp.WaitVisible(css("#send-form")))
	p.sendForm(map[string]string{"actor_type": "order", "entity_id": "o1", "type": "place", "correlation_id": "saga-ui-1",
		"payload": `{"sku":"apple","qty":2,"amount":1500,"inventory":"wh1","payment":"acct1"}`})
	p.until("place accepted", 20*time.Second, `document.querySelector("#send-status")?.dataset.status === "accepted"`)
	p.do("open the order", chromedp.Click(css("#send-entity-link")))
	// The order ends cancelled (1000 < 1500) once the Sends went round.
	p.until("order cancelled", 60*time.Second, `(() => {
		if (!document.querySelector('#history-table tr[data-event-type="evt.order.cancelled"]')) { document.getElementById("entity-lookup")?.click(); return false; }
		return true; })()`)
	p.do("follow the correlation link", chromedp.Click(css(`#history-table a.correlation[data-correlation="saga-ui-1"]`)))
	p.until("the saga across three entities", 30*time.Second, `(() => {
		const es = [...document.querySelectorAll("#saga-entities a")].map(a => a.dataset.entity).sort().join(",");
		return es === "inventory/wh1,order/o1,payment/acct1" && document.querySelector('#saga-table tr[data-event-type="evt.order.cancelled"]') !== null; })()`)
	p.screenshot("saga")
	p.do("to the inventory", chromedp.Click(css(`#saga-entities a[data-entity="inventory/wh1"]`)))
	p.until("the inventory's history has the saga's events", 20*time.Second,
		`[...document.querySelectorAll("#history-table a.correlation")].some(a => a.dataset.correlation === "saga-ui-1")`)

	// Metrics: the charts fill from the node's /metrics; with commands
	// arriving, the rate is above zero and the latency quantiles computed.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				if i > 25 { // enough for two history pages below
					return
				}
			case <-time.After(150 * time.Millisecond):
			}
			body := fmt.Sprintf(`{"address":{"actor_type":"counter","entity_id":"load"},"type":"cmd.counter.add","payload":{"amount":1},"idempotency_key":"load-%d"}`, i)
			req, _ := http.NewRequest(http.MethodPost, d.http+"/v1/submit", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+d.token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	p.do("open Metrics", chromedp.Click(css(`nav a[data-page="metrics"]`)))
	p.until("commands/s and p50/p99 computed", 20*time.Second, `/^[0-9.]+\/s$/.test(document.getElementById("metric-commands").textContent) &&
		Number(document.getElementById("metric-commands").textContent.replace("/s", "")) > 0 &&
		/^[0-9.]+ \/ [0-9.]+ ms$/.test(document.getElementById("metric-latency").textContent) &&
		document.querySelectorAll("svg.chart polyline").length >= 5`)
	close(stop)
	<-done
	p.screenshot("metrics")

	// History page by page: 20 records, then the rest.
	p.do("open the loaded entity", chromedp.Navigate(d.http+"/ui/#/entities?actor_type=counter&entity_id=load"))
	p.until("a full first page", 20*time.Second, `document.querySelectorAll("#history-table tr[data-event-id]").length === 20 && !document.getElementById("history-next").disabled`)
	first := eval[string](p, `document.querySelector("#history-table tr[data-event-id]").dataset.eventId`)
	p.do("next page", chromedp.Click(css("#history-next")))
	p.until("the second page", 10*time.Second, `document.querySelector("#history-table caption").textContent.startsWith("Page 2") &&
		document.querySelectorAll("#history-table tr[data-event-id]").length > 0 && document.querySelector("#history-table tr td").textContent === "21"`)
	p.do("previous page", chromedp.Click(css("#history-prev")))
	p.until("the first page again", 10*time.Second, `document.querySelector("#history-table tr[data-event-id]").dataset.eventId === `+js(first))

	// Dead letters are for admins; the dev token is not one.
	p.do("open Dead letters", chromedp.Click(css(`nav a[data-page="dead-letters"]`)))
	p.until("refused for a tenant token", 10*time.Second, `document.getElementById("dead-letters-denied") !== null`)
	p.screenshot("dead-letters")

	p.do("log out", chromedp.Click(css("#logout-btn")))
	if tok := eval[string](p, `sessionStorage.getItem("rhizon.token") || ""`); tok != "" {
		t.Fatal("the token outlived the log-out")
	}
}

// TestConsole_DevNodeOverTLS: the same page over HTTPS: every URL the
// console fetches is relative, so nothing goes to plain HTTP.
func TestConsole_DevNodeOverTLS(t *testing.T) {
	t.Parallel()
	needBinary(t)
	findBrowser(t) // skip or fail before starting any process
	certs := testcerts.Write(t)
	d := startDev(t, t.TempDir(), "RHIZON_TLS_CERT="+certs.Cert, "RHIZON_TLS_KEY="+certs.Key)
	if !strings.HasPrefix(d.http, "https://") {
		t.Fatalf("the banner's HTTP address %q is not https", d.http)
	}
	p := newPage(t, 2*time.Minute, true)
	p.login(d.http, d.token, "dev")
	p.until("every shard with a leader", 30*time.Second, shardsWithLeader+` === 4`)
	p.do("open Send", chromedp.Click(css(`nav a[data-page="send"]`)), chromedp.WaitVisible(css("#send-form")))
	p.sendForm(map[string]string{"actor_type": "counter", "entity_id": "tls1", "type": "add", "payload": `{"amount":3}`})
	p.until("accepted over TLS", 20*time.Second, `document.querySelector("#send-status")?.dataset.status === "accepted"`)
	if insecure := eval[[]string](p, `performance.getEntriesByType("resource").map(r => r.name).filter(n => !n.startsWith("https://"))`); len(insecure) > 0 {
		t.Fatalf("fetched without TLS: %v", insecure)
	}
	p.screenshot("send-tls")
}

// TestConsole_ClusterShowsShardsAndADeadNode: three real node processes; the
// cluster page of n1 shows all 8 shards with a leader and 3 replicas each,
// the form sends through n1, and n3 turns dead on the page once killed, its
// replicas unreachable in the shard grid.
func TestConsole_ClusterShowsShardsAndADeadNode(t *testing.T) {
	t.Parallel()
	needBinary(t)
	findBrowser(t) // skip or fail before starting any process
	c := newTestCluster(t, 3, time.Minute)
	for _, n := range c.nodes {
		n.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	c.submitThroughEach(4, "ui-")
	p := newPage(t, 3*time.Minute, false)
	base := "http://" + c.nodes[0].http
	p.login(base, opsToken, "ops")
	// An admin sees every replica's applied index.
	p.until("8 shards with a leader, 3 replicas each with its applied index", 30*time.Second, shardsWithLeader+` === 8 &&
		[...document.querySelectorAll("#shards-table tr[data-shard]")].every(r => r.querySelectorAll(".replica").length === 3) &&
		[...document.querySelectorAll(".replica")].some(r => / [1-9][0-9]*$/.test(r.textContent))`)
	p.until("3 nodes alive, each with its version", 10*time.Second, `["n1","n2","n3"].every(n => {
		const r = document.querySelector('#nodes-table tr[data-node="'+n+'"]');
		return r.dataset.state === "alive" && r.dataset.version !== "" && r.children[4].textContent === r.dataset.version; })`)
	p.screenshot("cluster")

	// A command through n1's form, whichever node leads its shard.
	p.do("open Send", chromedp.Click(css(`nav a[data-page="send"]`)))
	p.sendForm(map[string]string{"actor_type": "counter", "entity_id": "ui-cluster", "type": "add", "payload": `{"amount":4}`})
	p.until("accepted", 20*time.Second, `document.querySelector("#send-status")?.dataset.status === "accepted"`)
	p.do("back to the cluster", chromedp.Click(css(`nav a[data-page="cluster"]`)))
	p.until("3 nodes listed", 10*time.Second, `document.querySelectorAll("#nodes-table tr[data-node]").length === 3`)

	c.nodes[2].kill()
	p.until("n3 dead", 60*time.Second, `document.querySelector('#nodes-table tr[data-node="n3"]')?.dataset.state === "dead"`)
	p.until("every shard still has a leader", 60*time.Second, shardsWithLeader+` === 8`)
	// n3's replicas stay in the grid, marked unreachable, with no role or
	// applied index that would pass for a live one; no leader is n3.
	p.until("n3's replica of every shard unreachable", 10*time.Second, `[...document.querySelectorAll("#shards-table tr[data-shard]")].every(r => {
		const n3 = r.querySelectorAll('.replica[data-node="n3"]');
		return n3.length === 1 && n3[0].dataset.role === "unreachable" && n3[0].textContent === "n3 unreachable (node dead)" &&
			r.querySelectorAll(".replica").length === 3 && r.dataset.leader !== "n3"; })`)
	p.screenshot("cluster-n3-dead")
}
