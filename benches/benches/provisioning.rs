//! Provisioning parsers that tether hand-writes because the usual crates
//! allocate, measured side by side with those crates:
//!
//! - the portal's form: `tether_core::provisioning::form` (no alloc, caller
//!   buffers) vs `form_urlencoded` (the `url` crate's decoder, `Cow`s);
//! - a captive-portal DNS answer: `tether_core::provisioning::dns::respond`
//!   (no alloc, writes into a caller buffer) vs `hickory-proto` (parse the
//!   `Message`, build the response `Message`, serialise it).
//!
//! Run: `cargo bench -p tether-benches --bench provisioning`

use core::hint::black_box;
use core::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use tether_core::provisioning::dns;
use tether_core::provisioning::form::{Form, decode_into};

/// What a phone submits from the portal form.
const FORM: &[u8] = b"ssid=Caf%C3%A9+Central&other_ssid=&passphrase=correct+horse+battery%21\
&pairing_code=K7-42&server_url=wss%3A%2F%2Frelay.example.com%2Fdevice&device_id=sensor-7\
&token=tok_3f9a8c1e";
const FIELDS: [&str; 7] = [
    "ssid",
    "other_ssid",
    "passphrase",
    "pairing_code",
    "server_url",
    "device_id",
    "token",
];

fn form(c: &mut Criterion) {
    let mut group = c.benchmark_group("portal_form_decode");
    group.throughput(Throughput::Bytes(FORM.len() as u64));
    group.bench_function("tether", |b| {
        b.iter(|| {
            // What the portal does: find the fields and check the whole
            // body in one pass, decode each value into a buffer.
            let form = Form::new(black_box(FORM));
            let mut total = 0;
            let mut buf = [0u8; 128];
            if let Ok(values) = form.lookup(FIELDS) {
                for raw in values.into_iter().flatten() {
                    if let Ok(value) = decode_into(raw, &mut buf) {
                        total += value.len();
                    }
                }
            }
            total
        })
    });
    group.bench_function("form_urlencoded", |b| {
        b.iter(|| {
            let pairs: Vec<(_, _)> = form_urlencoded::parse(black_box(FORM)).collect();
            let mut total = 0;
            for field in FIELDS {
                if let Some((_, value)) = pairs.iter().find(|(k, _)| k == field) {
                    total += value.len();
                }
            }
            total
        })
    });
    group.finish();
}

fn query() -> Vec<u8> {
    // What Android sends first: connectivitycheck.gstatic.com A, with EDNS.
    let mut q = vec![0x4a, 0x1f, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in ["connectivitycheck", "gstatic", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    q
}

fn dns_answer(c: &mut Criterion) {
    let query = query();
    let mut group = c.benchmark_group("captive_dns_answer");
    group.throughput(Throughput::Elements(1));
    group.bench_function("tether", |b| {
        let mut out = [0u8; 512];
        b.iter(|| {
            dns::respond(black_box(&query), [192, 168, 4, 1], 60, &mut out)
                .map(|r| r.len)
                .unwrap_or(0)
        })
    });
    group.bench_function("hickory-proto", |b| {
        b.iter(|| {
            let Ok(request) = Message::from_vec(black_box(&query)) else {
                return 0;
            };
            let mut response =
                Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
            response.metadata.authoritative = true;
            response.metadata.recursion_desired = request.metadata.recursion_desired;
            if let Some(question) = request.queries.first() {
                response.add_query(question.clone());
                if question.query_type() == RecordType::A {
                    response.add_answer(Record::from_rdata(
                        question.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(192, 168, 4, 1))),
                    ));
                }
            }
            response.to_vec().map(|v| v.len()).unwrap_or(0)
        })
    });
    group.finish();
}

criterion_group!(benches, form, dns_answer);
criterion_main!(benches);
