package keygate

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type vector struct {
	Name         string `json:"name"`
	Secret       string `json:"secret"`
	Method       string `json:"method"`
	PathAndQuery string `json:"path_and_query"`
	KeyID        string `json:"key_id"`
	ProjectID    string `json:"project_id"`
	Environment  string `json:"environment"`
	Now          int64  `json:"now"`
	Header       string `json:"header"`
	Expected     string `json:"expected"`
}

type vectorFile struct {
	ToleranceSeconds int64    `json:"tolerance_seconds"`
	Cases            []vector `json:"cases"`
}

func load(t *testing.T) (vectorFile, map[string]vector) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "testdata", "origin_signature.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	byName := map[string]vector{}
	for _, c := range f.Cases {
		byName[c.Name] = c
	}
	return f, byName
}

func TestEveryVector(t *testing.T) {
	f, _ := load(t)
	if len(f.Cases) < 30 {
		t.Fatalf("%d cases", len(f.Cases))
	}
	for _, c := range f.Cases {
		req := Request{Method: c.Method, Target: c.PathAndQuery, KeyID: c.KeyID, ProjectID: c.ProjectID, Environment: c.Environment}
		if got := Verify([]byte(c.Secret), c.Header, req, c.Now, f.ToleranceSeconds); string(got) != c.Expected {
			t.Errorf("%s: got %s, want %s", c.Name, got, c.Expected)
		}
	}
}

func headersOf(c vector) http.Header {
	h := http.Header{}
	h.Set("Keygate-Key-Id", c.KeyID)
	h.Set("Keygate-Project-Id", c.ProjectID)
	h.Set("Keygate-Environment", c.Environment)
	h.Set("Keygate-Signature", c.Header)
	return h
}

func serve(t *testing.T, c vector, acceptV1 bool) *httptest.Server {
	t.Helper()
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]string{"key_id": info.KeyID, "target": r.RequestURI})
	})
	now := func() time.Time { return time.Unix(c.Now, 0) }
	srv := httptest.NewServer(Middleware(Options{Secret: []byte(c.Secret), AcceptV1: acceptV1, Now: now}, hello))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, base, target string, h http.Header) (int, string, map[string]interface{}) {
	t.Helper()
	req, err := http.NewRequest("GET", base+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]interface{}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return res.StatusCode, res.Header.Get("Content-Type"), body
}

func TestMiddlewareServesSignedRequestsOnly(t *testing.T) {
	_, cases := load(t)
	kat := cases["readme_known_answer"]
	srv := serve(t, kat, false)

	status, _, body := get(t, srv.URL, kat.PathAndQuery, headersOf(kat))
	if status != 200 || body["key_id"] != kat.KeyID {
		t.Fatalf("signed: %d %v", status, body)
	}
	// The raw target reaches the check: percent-encoding is signed as sent.
	raw := cases["percent_encoded_target"]
	status, _, body = get(t, srv.URL, raw.PathAndQuery, headersOf(raw))
	if status != 200 || body["target"] != raw.PathAndQuery {
		t.Fatalf("percent-encoded: %d %v", status, body)
	}

	unsigned := headersOf(kat)
	unsigned.Del("Keygate-Signature")
	otherProject := headersOf(kat)
	otherProject.Set("Keygate-Project-Id", "prj_2")
	garbage := headersOf(kat)
	garbage.Set("Keygate-Signature", "garbage")
	for _, tc := range []struct {
		h    http.Header
		code string
	}{{unsigned, "missing_signature"}, {otherProject, "signature_mismatch"}, {garbage, "malformed_signature"}} {
		status, ctype, body := get(t, srv.URL, kat.PathAndQuery, tc.h)
		if status != 401 || ctype != "application/problem+json" || body["code"] != tc.code || body["status"] != float64(401) {
			t.Errorf("%s: %d %s %v", tc.code, status, ctype, body)
		}
		if strings.Contains(body["detail"].(string), kat.Secret) {
			t.Errorf("the secret is in the body")
		}
	}
}

func TestVersionOneNeedsAcceptV1(t *testing.T) {
	_, cases := load(t)
	v1 := cases["v1_only"]
	status, _, body := get(t, serve(t, v1, false).URL, v1.PathAndQuery, headersOf(v1))
	if status != 401 || body["code"] != "signature_v1_only" {
		t.Fatalf("refused: %d %v", status, body)
	}
	status, _, body = get(t, serve(t, v1, true).URL, v1.PathAndQuery, headersOf(v1))
	if status != 200 {
		t.Fatalf("accepted: %d %v", status, body)
	}
}
