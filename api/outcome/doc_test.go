package outcome

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// grpcName is how the docs name a gRPC code; OK means the answer is a Result.
func grpcName(c codes.Code) string {
	if c == codes.OK {
		return "OK (a Result)"
	}
	return c.String()
}

// reasonName is how the docs name a reason; a decided command has none.
func reasonName(r string) string {
	if r == "" {
		return "-"
	}
	return r
}

// markdown renders Table as the README shows it.
func markdown() string {
	var b strings.Builder
	b.WriteString("| code | gRPC | ErrorInfo reason | applied | meaning |\n|---|---|---|---|---|\n")
	for _, e := range Table {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", e.Code, grpcName(codes.Code(e.GRPC)), reasonName(e.Reason), e.Applied, e.Doc)
	}
	return b.String()
}

// protoComment renders Table as the comment on Result.code shows it.
func protoComment() string {
	var b strings.Builder
	for _, e := range Table {
		fmt.Fprintf(&b, "  //   %-18s %-17s %-15s %s\n", e.Code, grpcName(codes.Code(e.GRPC)), reasonName(e.Reason), e.Applied)
	}
	return b.String()
}

// TestDocsMatchTable: the README and the proto show Table verbatim, so the
// documented contract cannot drift from the one the servers answer with.
// On a failure, paste the wanted text (printed) into the file.
func TestDocsMatchTable(t *testing.T) {
	for _, doc := range []struct{ path, want string }{
		{"../../README.md", markdown()},
		{"../proto/rhizon/v1/rhizon.proto", protoComment()},
	} {
		b, err := os.ReadFile(doc.path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), doc.want) {
			t.Errorf("%s does not hold the table of api/outcome; want:\n%s", doc.path, doc.want)
		}
	}
}

// TestTable checks what the servers rely on: codes are unique, every write
// sentinel has a row, and only Unknown and NotApplied rows are errors.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range Table {
		if seen[e.Code] {
			t.Errorf("code %q twice", e.Code)
		}
		seen[e.Code] = true
		if (e.GRPC == GRPCOK) != (e.Applied == AppliedYes) && e.Code != "violation" && e.Code != "invalid" {
			t.Errorf("%s: gRPC %s with applied %s", e.Code, codes.Code(e.GRPC), e.Applied)
		}
	}
	for _, err := range []error{ErrNotLeader, ErrUnknownOutcome, ErrOverloaded, ErrClosed, ErrHalted} {
		e := Of(fmt.Errorf("wrapped: %w", err))
		if e.Sentinel() != err {
			t.Errorf("%v: row %s stands for %v", err, e.Code, e.Sentinel())
		}
	}
	if e := Of(fmt.Errorf("a deadline while waiting")); e.Applied != Unknown {
		t.Errorf("an unclassified error is %s, want unknown", e.Applied)
	}
	if a, known := OfReason(ReasonNotApplied); !known || a != NotApplied {
		t.Errorf("NOT_APPLIED reads as %s, %v", a, known)
	}
	if a, known := OfReason("FROM_THE_FUTURE"); known || a != Unknown {
		t.Errorf("an undeclared reason reads as %s, %v", a, known)
	}
}

// TestGRPCCodesAreGRPCs: the table's own code numbers are gRPC's.
func TestGRPCCodesAreGRPCs(t *testing.T) {
	for own, grpc := range map[GRPCCode]codes.Code{
		GRPCOK: codes.OK, GRPCInvalidArgument: codes.InvalidArgument, GRPCPermissionDenied: codes.PermissionDenied,
		GRPCResourceExhausted: codes.ResourceExhausted, GRPCInternal: codes.Internal, GRPCUnavailable: codes.Unavailable,
	} {
		if codes.Code(own) != grpc {
			t.Errorf("%d is not %s (%d)", own, grpc, grpc)
		}
	}
}
