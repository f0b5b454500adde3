// Package keygate verifies Keygate-Signature, the header the Keygate edge adds to every
// request it forwards (docs/origins.md). Standard library only.
//
//	secret := []byte(os.Getenv("ORIGIN_HMAC_SECRET"))
//	http.ListenAndServe(":8080", keygate.Middleware(keygate.Options{Secret: secret}, mux))
package keygate

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ToleranceSeconds is how far the signature's timestamp may be from the origin's clock.
const ToleranceSeconds = 300

// Outcome is what a check concluded.
type Outcome string

// The outcomes, as in shared/testdata/origin_signature.json.
const (
	ValidV2     Outcome = "valid_v2"
	ValidV1Only Outcome = "valid_v1_only" // only a version-1 MAC: accept only during the transition
	Stale       Outcome = "stale"
	Mismatch    Outcome = "mismatch"
	Malformed   Outcome = "malformed"
)

// Request is what the signature covers, as the origin received it.
type Request struct {
	Method string
	// Target is the request target exactly as received: the raw path, then "?" and the raw
	// query when there is one (r.RequestURI in net/http), not percent-decoded.
	Target      string
	KeyID       string
	ProjectID   string
	Environment string
}

type parsed struct {
	t      int64
	v1, v2 []string
}

// parse reads "t=<unix seconds>,v1=<hex>,v2=<hex>"; ok is false when it is not that shape.
func parse(header string) (p parsed, ok bool) {
	haveT := false
	for _, part := range strings.Split(header, ",") {
		name, value, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return p, false
		}
		switch name {
		case "t":
			// ParseInt takes the same signed 64-bit decimals as the edge's parser.
			t, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return p, false
			}
			p.t, haveT = t, true
		case "v1":
			p.v1 = append(p.v1, value)
		case "v2":
			p.v2 = append(p.v2, value)
		default:
			return p, false
		}
	}
	return p, haveT && (len(p.v1) > 0 || len(p.v2) > 0)
}

func mac(secret []byte, fields ...string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strings.Join(fields, "\n")))
	return m.Sum(nil)
}

// anyMatches reports whether one of the hex candidates is expected, compared in constant time.
func anyMatches(candidates []string, expected []byte) bool {
	ok := 0
	for _, c := range candidates {
		got, err := hex.DecodeString(c)
		if err != nil || len(got) != len(expected) {
			continue
		}
		ok |= subtle.ConstantTimeCompare(got, expected)
	}
	return ok == 1
}

// Verify checks a Keygate-Signature header for req at now (Unix seconds).
func Verify(secret []byte, header string, req Request, now, toleranceSeconds int64) Outcome {
	p, ok := parse(header)
	if !ok {
		return Malformed
	}
	if toleranceSeconds < 0 {
		toleranceSeconds = 0
	}
	// In uint64, so that extreme timestamps cannot overflow.
	var skew uint64
	if now >= p.t {
		skew = uint64(now) - uint64(p.t)
	} else {
		skew = uint64(p.t) - uint64(now)
	}
	if skew > uint64(toleranceSeconds) {
		return Stale
	}
	t := strconv.FormatInt(p.t, 10)
	method := strings.ToUpper(req.Method)
	if len(p.v2) > 0 {
		expected := mac(secret, t, method, req.Target, req.KeyID, req.ProjectID, req.Environment)
		if anyMatches(p.v2, expected) {
			return ValidV2
		}
		return Mismatch
	}
	// Version 1 covered the path only, without the query.
	path, _, _ := strings.Cut(req.Target, "?")
	if anyMatches(p.v1, mac(secret, t, method, path, req.KeyID)) {
		return ValidV1Only
	}
	return Mismatch
}

// Options configure Middleware.
type Options struct {
	// Secret is ORIGIN_HMAC_SECRET. Never log it.
	Secret []byte
	// AcceptV1 also accepts version-1 signatures (the transition).
	AcceptV1 bool
	// ToleranceSeconds defaults to ToleranceSeconds.
	ToleranceSeconds int64
	// Now defaults to the clock; for tests.
	Now func() time.Time
}

// Info is what a verified request carries, in its context (FromContext).
type Info struct {
	KeyID, ProjectID, Environment string
	Version                       int
}

type infoKey struct{}

// FromContext answers the verified request's Info.
func FromContext(ctx context.Context) (Info, bool) {
	i, ok := ctx.Value(infoKey{}).(Info)
	return i, ok
}

var refusals = map[Outcome][2]string{
	"missing":   {"missing_signature", "The request has no Keygate-Signature header."},
	Malformed:   {"malformed_signature", "The Keygate-Signature header is not t=...,v2=...."},
	Stale:       {"stale_signature", "The signature's timestamp is too far from this server's clock."},
	Mismatch:    {"signature_mismatch", "The signature does not match this request."},
	ValidV1Only: {"signature_v1_only", "The request carries a version-1 signature only."},
}

func refuse(w http.ResponseWriter, outcome Outcome) {
	r := refusals[outcome]
	body, _ := json.Marshal(map[string]interface{}{
		"type":   "urn:keygate:problem:" + r[0],
		"title":  "Request not signed by the Keygate edge",
		"status": http.StatusUnauthorized,
		"detail": r[1],
		"code":   r[0],
	})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(body)
}

// Middleware refuses with 401 and a problem+json body every request without a valid
// Keygate-Signature, and passes the others to next with their Info in the context.
func Middleware(o Options, next http.Handler) http.Handler {
	if len(o.Secret) == 0 {
		panic("keygate: the shared secret is required")
	}
	tolerance := o.ToleranceSeconds
	if tolerance == 0 {
		tolerance = ToleranceSeconds
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header, present := r.Header["Keygate-Signature"]
		if !present {
			refuse(w, "missing")
			return
		}
		req := Request{
			Method: r.Method,
			// RequestURI is the target as received; r.URL.Path is decoded.
			Target:      r.RequestURI,
			KeyID:       r.Header.Get("Keygate-Key-Id"),
			ProjectID:   r.Header.Get("Keygate-Project-Id"),
			Environment: r.Header.Get("Keygate-Environment"),
		}
		outcome := Verify(o.Secret, strings.Join(header, ","), req, now().Unix(), tolerance)
		if outcome != ValidV2 && !(outcome == ValidV1Only && o.AcceptV1) {
			refuse(w, outcome)
			return
		}
		version := 2
		if outcome == ValidV1Only {
			version = 1
		}
		info := Info{KeyID: req.KeyID, ProjectID: req.ProjectID, Environment: req.Environment, Version: version}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
	})
}
