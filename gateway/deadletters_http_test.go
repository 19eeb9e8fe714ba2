package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
)

func call(t *testing.T, base, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The dead-letter routes over a real node, NATS and ingress: admin only,
// bad input named, a rejected letter listed and refused for redrive.
func TestDeadLetterRoutes(t *testing.T) {
	e := startAsyncEnv(t)
	base := e.http.URL
	bad := nats.NewMsg(stream.IngressSubject(0))
	bad.Data = []byte("not a command")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	var page JSONDeadLettersResponse
	testkit.EventuallyNil(t, 20*time.Second, "one dead letter listed", func() error {
		code, body := call(t, base, "GET", "/v1/admin/dead_letters", tokAdmin, "")
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			return err
		}
		if len(page.DeadLetters) != 1 {
			return fmt.Errorf("%d dead letters", len(page.DeadLetters))
		}
		return nil
	})
	d := page.DeadLetters[0]
	if d.Kind != "rejected" || d.Body != "not a command" || d.Redrivable || d.NotRedrivable == "" || d.At == 0 {
		t.Fatalf("dead letter %+v", d)
	}

	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
		msg                             string
	}{
		{"no token", "GET", "/v1/admin/dead_letters", "", "", 401, "unauthenticated"},
		{"tenant token lists", "GET", "/v1/admin/dead_letters", tokAlice, "", 403, "needs a token with role admin"},
		{"tenant token redrives", "POST", "/v1/admin/dead_letters/redrive", tokAlice, `{"sequence":1}`, 403, "needs a token with role admin"},
		{"POST to the list", "POST", "/v1/admin/dead_letters", tokAdmin, "{}", 405, "takes GET"},
		{"bad limit", "GET", "/v1/admin/dead_letters?limit=0", tokAdmin, "", 400, "from 1 to 500"},
		{"bad after", "GET", "/v1/admin/dead_letters?after=x", tokAdmin, "", 400, "not a sequence number"},
		{"unknown parameter", "GET", "/v1/admin/dead_letters?from=1", tokAdmin, "", 400, `unknown query parameter \"from\"`},
		{"no sequence", "POST", "/v1/admin/dead_letters/redrive", tokAdmin, `{}`, 400, "sequence is required"},
		{"no such letter", "POST", "/v1/admin/dead_letters/redrive", tokAdmin, `{"sequence":999}`, 404, "no dead letter with that sequence"},
		{"rejected letter", "POST", "/v1/admin/dead_letters/redrive", tokAdmin, fmt.Sprintf(`{"sequence":%d}`, d.Sequence), 400, "rejected for good"},
	} {
		code, body := call(t, base, tc.method, tc.path, tc.token, tc.body)
		if code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("%s: got %d %s, want %d with %q", tc.name, code, body, tc.code, tc.msg)
		}
	}
	if code, body := call(t, base, "GET", fmt.Sprintf("/v1/admin/dead_letters?after=%d", d.Sequence), tokAdmin, ""); code != 200 || !strings.Contains(body, `"dead_letters":[]`) {
		t.Errorf("past the last: %d %s", code, body)
	}

	// The gRPC twins answer alike.
	admin := adminServer{s: e.srv}
	list, err := admin.ListDeadLetters(adminCtx(tokAdmin), &pb.ListDeadLettersRequest{})
	if err != nil || len(list.GetDeadLetters()) != 1 || string(list.GetDeadLetters()[0].GetBody()) != "not a command" || list.GetDeadLetters()[0].GetRedrivable() {
		t.Fatalf("ListDeadLetters: %v %v", list, err)
	}
	for _, tc := range []struct {
		tok  string
		req  *pb.ListDeadLettersRequest
		code codes.Code
	}{
		{"", &pb.ListDeadLettersRequest{}, codes.Unauthenticated},
		{tokAlice, &pb.ListDeadLettersRequest{}, codes.PermissionDenied},
		{tokAdmin, &pb.ListDeadLettersRequest{Limit: 501}, codes.InvalidArgument},
	} {
		if _, err := admin.ListDeadLetters(adminCtx(tc.tok), tc.req); status.Code(err) != tc.code {
			t.Errorf("ListDeadLetters(%q, %v): %v, want %v", tc.tok, tc.req, err, tc.code)
		}
	}
	for _, tc := range []struct {
		tok  string
		seq  uint64
		code codes.Code
	}{
		{tokOps, d.Sequence, codes.PermissionDenied},
		{tokAdmin, 0, codes.InvalidArgument},
		{tokAdmin, 999, codes.NotFound},
		{tokAdmin, d.Sequence, codes.FailedPrecondition},
	} {
		if _, err := admin.RedriveDeadLetter(adminCtx(tc.tok), &pb.RedriveDeadLetterRequest{Sequence: tc.seq}); status.Code(err) != tc.code {
			t.Errorf("RedriveDeadLetter(%q, %d): %v, want %v", tc.tok, tc.seq, err, tc.code)
		}
	}
}

// A node without JetStream says so.
func TestDeadLetterRoutesWithoutNATS(t *testing.T) {
	h := newHarness(t)
	code, body := httpCall(t, h, "GET", "/v1/admin/dead_letters", tokAdmin, "")
	if code != 501 || !strings.Contains(string(body), "no JetStream") {
		t.Fatalf("got %d %s", code, body)
	}
	if _, err := pb.NewAdminClient(h.conn).RedriveDeadLetter(withToken(context.Background(), tokAdmin), &pb.RedriveDeadLetterRequest{Sequence: 1}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("RedriveDeadLetter over gRPC: %v, want Unimplemented", err)
	}
}
