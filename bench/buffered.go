package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
)

// serveBuffered runs the baseline: the app's current routes, rebuilt in
// Go. Each request reads the whole file into memory, then sends it on, as
// the Node app does.
func serveBuffered(addr, graph string) {
	client := &http.Client{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/media/upload", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+apiToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		data, err := io.ReadAll(r.Body) // the whole file in memory
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var body bytes.Buffer // and the whole multipart body too
		mw := multipart.NewWriter(&body)
		_ = mw.WriteField("messaging_product", "whatsapp")
		_ = mw.WriteField("type", r.Header.Get("Content-Type"))
		h := make(map[string][]string)
		h["Content-Disposition"] = []string{`form-data; name="file"; filename="file"`}
		h["Content-Type"] = []string{r.Header.Get("Content-Type")}
		pw, _ := mw.CreatePart(h)
		_, _ = pw.Write(data)
		_ = mw.Close()
		req, _ := http.NewRequest(http.MethodPost, graph+"/v23.0/"+r.Header.Get("X-Phone-Number-Id")+"/media", &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", "Bearer "+metaToken)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(answer)
	})
	mux.HandleFunc("GET /v2/media/{id}/download", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+apiToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		req, _ := http.NewRequest(http.MethodGet, graph+"/v23.0/"+r.PathValue("id"), nil)
		req.Header.Set("Authorization", "Bearer "+metaToken)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		var meta struct {
			URL      string `json:"url"`
			MimeType string `json:"mime_type"`
		}
		err = json.NewDecoder(resp.Body).Decode(&meta)
		resp.Body.Close()
		if err != nil || meta.URL == "" {
			http.Error(w, "no url", http.StatusNotFound)
			return
		}
		req, _ = http.NewRequest(http.MethodGet, meta.URL, nil)
		req.Header.Set("Authorization", "Bearer "+metaToken)
		req.Header.Set("User-Agent", "buffered/1")
		resp, err = client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		data, err := io.ReadAll(resp.Body) // the whole file in memory
		resp.Body.Close()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", meta.MimeType)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = w.Write(data)
	})
	log.Fatal(http.ListenAndServe(strings.TrimPrefix(addr, "http://"), mux))
}
