package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// ------------------------------------------------------------------------ CBOR modes

var (
	// strict decoding of whatever we read: no duplicate keys, no indefinite lengths
	anyDec = mustDec(cbor.DecOptions{
		DupMapKey:       cbor.DupMapKeyEnforcedAPF,
		IndefLength:     cbor.IndefLengthForbidden,
		MaxNestedLevels: 32,
	})
	// RFC 8949 §4.2.1 core deterministic encoding, fxamacker's own implementation
	detEnc = mustEnc(cbor.CoreDetEncOptions())
)

func mustDec(o cbor.DecOptions) cbor.DecMode {
	m, err := o.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

func mustEnc(o cbor.EncOptions) cbor.EncMode {
	m, err := o.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}

// deterministic says whether data is one CBOR item that fxamacker's core deterministic encoder
// reproduces byte for byte (RFC 8949 §4.2.1: shortest heads and floats, sorted keys).
func deterministic(data []byte) error {
	var v any
	rest, err := anyDec.UnmarshalFirst(data, &v)
	if err != nil {
		return fmt.Errorf("fxamacker/cbor cannot decode it: %w", err)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes after the CBOR item", len(rest))
	}
	again, err := detEnc.Marshal(v)
	if err != nil {
		return fmt.Errorf("fxamacker/cbor cannot re-encode it: %w", err)
	}
	if !bytes.Equal(again, data) {
		return fmt.Errorf("not core deterministic: fxamacker/cbor re-encodes %d bytes as %d bytes (first difference at byte %d)",
			len(data), len(again), firstDiff(data, again))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// ------------------------------------------------------------------------ COSE_Sign1

// sign1 is a COSE_Sign1 (RFC 9052 §4.2) as fxamacker decodes it.
type sign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected map[int64]any
	Payload     []byte
	Signature   []byte
}

type coseMessage struct {
	sign1
	Kid          string
	SigStructure []byte
}

// parseSign1 decodes a tagged COSE_Sign1 with the headers fieldproof uses: protected
// {1: -8 (EdDSA), 4: kid}, unprotected empty.
func parseSign1(data []byte) (*coseMessage, error) {
	var tag cbor.RawTag
	if err := anyDec.Unmarshal(data, &tag); err != nil {
		return nil, fmt.Errorf("not a CBOR tag: %w", err)
	}
	if tag.Number != 18 {
		return nil, fmt.Errorf("CBOR tag %d is not COSE_Sign1 (18)", tag.Number)
	}
	var m coseMessage
	if err := anyDec.Unmarshal(tag.Content, &m.sign1); err != nil {
		return nil, fmt.Errorf("COSE_Sign1 array: %w", err)
	}
	var hdr map[int64]any
	if err := anyDec.Unmarshal(m.Protected, &hdr); err != nil {
		return nil, fmt.Errorf("protected header: %w", err)
	}
	alg, ok := hdr[1].(int64)
	kid, ok2 := hdr[4].([]byte)
	if !ok || alg != -8 || !ok2 || len(hdr) != 2 || len(m.Unprotected) != 0 {
		return nil, fmt.Errorf("headers are not protected {1: -8, 4: kid} and unprotected {}: %v / %v", hdr, m.Unprotected)
	}
	m.Kid = string(kid)
	// Sig_structure = ["Signature1", protected, external_aad = h'', payload] (RFC 9052 §4.4)
	sigs, err := detEnc.Marshal([]any{"Signature1", m.Protected, []byte{}, m.Payload})
	if err != nil {
		return nil, err
	}
	m.SigStructure = sigs
	return &m, nil
}

func (m *coseMessage) verify(pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("public key is %d bytes", len(pub))
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), m.SigStructure, m.Signature) {
		return fmt.Errorf("Ed25519 signature does not verify (crypto/ed25519 over fxamacker's Sig_structure)")
	}
	return nil
}

func gatewayID(pub []byte) string {
	sum := sha256.Sum256(pub)
	return "gw-" + hex.EncodeToString(sum[:8])
}

// ------------------------------------------------------------------------ messages

type reading struct {
	Name    string   `json:"name"`
	Unit    string   `json:"unit"`
	Time    float64  `json:"time"`
	Value   *float64 `json:"value,omitempty"`
	Missing *string  `json:"missing,omitempty"`
}

type payload struct {
	V        uint64    `json:"v"`
	Gw       string    `json:"gw"`
	Seq      uint64    `json:"seq"`
	Boot     uint64    `json:"boot"`
	Readings []reading `json:"readings"`
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case uint64:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}

// decodePayload reads a message payload: {"v", "gw", "seq", "boot", "e": SenML pack with CBOR
// labels (-2 bn, -3 bt, 0 n, 1 u, 2 v, 3 vs, 6 t)} (docs/wire-format.md).
func decodePayload(data []byte) (*payload, error) {
	var raw struct {
		V    uint64          `cbor:"v"`
		Gw   string          `cbor:"gw"`
		Seq  uint64          `cbor:"seq"`
		Boot uint64          `cbor:"boot"`
		E    []map[int64]any `cbor:"e"`
	}
	dm := mustDec(cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, ExtraReturnErrors: cbor.ExtraDecErrorUnknownField})
	if err := dm.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	p := &payload{V: raw.V, Gw: raw.Gw, Seq: raw.Seq, Boot: raw.Boot}
	if len(raw.E) == 0 {
		return nil, fmt.Errorf("empty SenML pack")
	}
	bn, _ := raw.E[0][-2].(string)
	if bn != "urn:dev:fp:"+raw.Gw+":" {
		return nil, fmt.Errorf("SenML base name %q is not urn:dev:fp:%s:", bn, raw.Gw)
	}
	bt, ok := num(raw.E[0][-3])
	if !ok {
		return nil, fmt.Errorf("SenML base time missing")
	}
	for i, rec := range raw.E {
		name, _ := rec[0].(string)
		unit, _ := rec[1].(string)
		off := 0.0
		if t, ok := rec[6]; ok {
			if off, ok = num(t); !ok {
				return nil, fmt.Errorf("record %d: time offset is not a number", i)
			}
		}
		r := reading{Name: name, Unit: unit, Time: bt + off}
		if v, ok := rec[2]; ok {
			f, ok := num(v)
			if !ok {
				return nil, fmt.Errorf("record %d: value is not a number", i)
			}
			r.Value = &f
		} else if vs, ok := rec[3].(string); ok && len(vs) > 8 && vs[:8] == "missing:" {
			reason := vs[8:]
			r.Missing = &reason
		} else {
			return nil, fmt.Errorf("record %d has neither v nor vs = missing:<reason>", i)
		}
		p.Readings = append(p.Readings, r)
	}
	return p, nil
}

// checkMessage: tagged COSE_Sign1, deterministic, signed by pub, payload gateway = kid.
func checkMessage(data, pub []byte) (*coseMessage, *payload, error) {
	m, err := parseSign1(data)
	if err != nil {
		return nil, nil, err
	}
	if err := deterministic(data); err != nil {
		return nil, nil, fmt.Errorf("message: %w", err)
	}
	if err := deterministic(m.Payload); err != nil {
		return nil, nil, fmt.Errorf("payload: %w", err)
	}
	if err := m.verify(pub); err != nil {
		return nil, nil, err
	}
	p, err := decodePayload(m.Payload)
	if err != nil {
		return nil, nil, fmt.Errorf("payload: %w", err)
	}
	if p.Gw != m.Kid || p.V != 1 {
		return nil, nil, fmt.Errorf("payload gateway %q (v %d) is not the kid %q", p.Gw, p.V, m.Kid)
	}
	return m, p, nil
}

func checkMessageFile(c *checker, dir string) error {
	var exp struct {
		Gateway      string  `json:"gateway"`
		PublicKey    string  `json:"public_key"`
		Protected    string  `json:"protected"`
		Payload      string  `json:"payload"`
		Signature    string  `json:"signature"`
		SigStructure string  `json:"sig_structure"`
		Decoded      payload `json:"decoded_payload"`
	}
	if err := readJSON(filepath.Join(dir, "message.expected.json"), &exp); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, "message.cose"))
	if err != nil {
		return err
	}
	pub, err := unhex(exp.PublicKey)
	if err != nil {
		return err
	}
	m, p, err := checkMessage(data, pub)
	if !c.check(err, "message/message.cose") {
		return nil
	}
	got := map[string]string{
		"protected": hex.EncodeToString(m.Protected), "payload": hex.EncodeToString(m.Payload),
		"signature": hex.EncodeToString(m.Signature), "sig_structure": hex.EncodeToString(m.SigStructure),
		"gateway": m.Kid,
	}
	want := map[string]string{"protected": exp.Protected, "payload": exp.Payload, "signature": exp.Signature,
		"sig_structure": exp.SigStructure, "gateway": exp.Gateway}
	for k := range want {
		if got[k] != want[k] {
			c.fail("message/message.cose: %s is %s, expected %s", k, got[k], want[k])
			return nil
		}
	}
	if !reflect.DeepEqual(*p, exp.Decoded) {
		gj, _ := json.Marshal(p)
		ej, _ := json.Marshal(exp.Decoded)
		c.fail("message/message.cose: payload decodes to %s, expected %s", gj, ej)
		return nil
	}
	c.ok("message/message.cose: COSE_Sign1 of %s verifies, deterministic, payload (seq %d, %d readings) as expected",
		p.Gw, p.Seq, len(p.Readings))
	return nil
}

// ------------------------------------------------------------------------ enrollment request

func checkEnrollmentFile(c *checker, dir string) error {
	var exp struct {
		Gateway     string         `json:"gateway"`
		PublicKey   string         `json:"public_key"`
		Protected   string         `json:"protected"`
		Payload     string         `json:"payload"`
		Signature   string         `json:"signature"`
		Body        map[string]any `json:"body"`
		CsrCN       string         `json:"csr_common_name"`
		TokenMacKey string         `json:"token_mac_key"`
	}
	if err := readJSON(filepath.Join(dir, "request.expected.json"), &exp); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, "request.cose"))
	if err != nil {
		return err
	}
	problem := enrollmentProblem(data, exp.PublicKey, exp.Gateway, exp.Body, exp.CsrCN, exp.TokenMacKey)
	if problem != nil {
		c.fail("enrollment/request.cose: %v", problem)
		return nil
	}
	c.ok("enrollment/request.cose: COSE_Sign1 verifies with its own pk, deterministic, fields, CSR (CN %s, signature) and token MAC as expected",
		exp.CsrCN)
	return nil
}

func enrollmentProblem(data []byte, pubHex, gw string, want map[string]any, cn, macKeyHex string) error {
	pub, err := unhex(pubHex)
	if err != nil {
		return err
	}
	if gatewayID(pub) != gw {
		return fmt.Errorf("gateway id of the key is %s, not %s", gatewayID(pub), gw)
	}
	m, err := parseSign1(data)
	if err != nil {
		return err
	}
	if err := deterministic(data); err != nil {
		return err
	}
	if err := m.verify(pub); err != nil {
		return err
	}
	var body map[string]any
	if err := anyDec.Unmarshal(m.Payload, &body); err != nil {
		return err
	}
	for k, w := range want {
		g, ok := body[k]
		if !ok {
			return fmt.Errorf("field %q missing", k)
		}
		if !sameJSON(g, w) {
			gj, _ := json.Marshal(jsonable(g))
			wj, _ := json.Marshal(w)
			return fmt.Errorf("field %q is %s, expected %s", k, gj, wj)
		}
	}
	// the CSR, with Go's own X.509 parser
	der, _ := body["csr"].([]byte)
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return fmt.Errorf("crypto/x509 cannot parse the CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("CSR signature: %w", err)
	}
	if csr.Subject.CommonName != cn || cn != gw {
		return fmt.Errorf("CSR CN %q, expected %q", csr.Subject.CommonName, cn)
	}
	// tmac = HMAC-SHA256(token key, deterministic CBOR of the body without tmac): our MAC over
	// fxamacker's encoding of the same map
	tmac, _ := body["tmac"].([]byte)
	delete(body, "tmac")
	again, err := detEnc.Marshal(body)
	if err != nil {
		return err
	}
	key, err := unhex(macKeyHex)
	if err != nil {
		return err
	}
	h := hmac.New(sha256.New, key)
	h.Write(again)
	if !hmac.Equal(h.Sum(nil), tmac) {
		return fmt.Errorf("tmac %x is not HMAC-SHA256 over fxamacker's deterministic encoding of the body", tmac)
	}
	return nil
}

// jsonable turns a decoded CBOR value into what encoding/json would give for the sidecar:
// byte strings as hex, maps with text keys.
func jsonable(v any) any {
	switch x := v.(type) {
	case []byte:
		return hex.EncodeToString(x)
	case map[any]any:
		out := map[string]any{}
		for k, e := range x {
			out[fmt.Sprint(k)] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	case uint64:
		return float64(x)
	case int64:
		return float64(x)
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return fmt.Sprint(x)
		}
		return x
	}
	return v
}

func sameJSON(got, want any) bool {
	a, err1 := json.Marshal(jsonable(got))
	b, err2 := json.Marshal(want)
	if err1 != nil || err2 != nil {
		return false
	}
	var x, y any
	_ = json.Unmarshal(a, &x)
	_ = json.Unmarshal(b, &y)
	return reflect.DeepEqual(x, y)
}
