//! The CPU scaler comparison behind `Filter::DEFAULT` (docs/SCALING.md).
//!
//! Candidates: swscale `SWS_BICUBIC` (the quality bar), with accurate
//! rounding, swscale `SWS_LANCZOS`, and fast_image_resize convolution
//! (AVX2) with several kernels, per plane as U8 images, on a 1080p frame.
//!
//! 1. Quality, printed first: PSNR of each candidate's 720p/480p/360p output
//!    against an f64 Lanczos-3 resample of the same frame (and, second
//!    opinion, against swscale `SWS_LANCZOS|SWS_ACCURATE_RND`), on FFmpeg
//!    `testsrc2`, `mandelbrot` and `cellauto` frames (synthetic content if
//!    there is no `ffmpeg` binary).
//! 2. Speed: criterion, one group per rung, every candidate in the same run
//!    so that noise hits them alike. Medians are in
//!    `target/criterion/<group>/<candidate>/new/estimates.json`.
//!
//! `cargo bench --bench scale -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion};
use fast_image_resize as fir;
use fir::images::{TypedCroppedImageMut, TypedImage, TypedImageRef};
use fir::pixels::U8;
use fir::FilterType;
use ladder::pipeline::cpu::scale::{reference, rung_size, Scaler, SwsKernel};
use ladder::pipeline::frame::{Picture, Plane};
use std::hint::black_box;

const SRC: (u32, u32) = (1920, 1080);
const RUNGS: [u32; 3] = [720, 480, 360];

#[derive(Clone, Copy)]
enum Candidate {
    Sws(SwsKernel),
    Fir(FilterType),
}

const CANDIDATES: [(&str, Candidate); 6] = [
    ("sws_bicubic", Candidate::Sws(SwsKernel::Bicubic)),
    (
        "sws_bicubic_accurate",
        Candidate::Sws(SwsKernel::BicubicAccurate),
    ),
    ("sws_lanczos", Candidate::Sws(SwsKernel::Lanczos)),
    ("fir_bilinear", Candidate::Fir(FilterType::Bilinear)),
    ("fir_catmullrom", Candidate::Fir(FilterType::CatmullRom)),
    ("fir_lanczos3", Candidate::Fir(FilterType::Lanczos3)),
];

/// The fast_image_resize candidate: each plane resized as a U8 image, viewed
/// `stride` wide and cropped to its width (the source crop in the options,
/// fractional for odd chroma; the destination crop a view).
struct FirScaler {
    resizer: fir::Resizer,
    options: [fir::ResizeOptions; 3],
}

impl FirScaler {
    fn new(filter: FilterType) -> FirScaler {
        let base = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(filter));
        let (w, h) = (f64::from(SRC.0), f64::from(SRC.1));
        let chroma = base.crop(0.0, 0.0, w / 2.0, h / 2.0);
        FirScaler {
            resizer: fir::Resizer::new(),
            options: [base.crop(0.0, 0.0, w, h), chroma, chroma],
        }
    }

    fn scale(&mut self, src: &Picture, dst: &mut Picture) {
        for ((sp, dp), options) in src.planes.iter().zip(&mut dst.planes).zip(&self.options) {
            Self::plane(&mut self.resizer, sp, dp, options);
        }
    }

    fn plane(
        resizer: &mut fir::Resizer,
        src: &Plane,
        dst: &mut Plane,
        options: &fir::ResizeOptions,
    ) {
        let src_img = TypedImageRef::<U8>::from_buffer(
            src.stride as u32,
            src.height as u32,
            &src.data[..src.stride * src.height],
        )
        .unwrap();
        let dst_img = TypedImage::<U8>::from_buffer(
            dst.stride as u32,
            dst.height as u32,
            &mut dst.data[..dst.stride * dst.height],
        )
        .unwrap();
        let mut view =
            TypedCroppedImageMut::new(dst_img, 0, 0, dst.width as u32, dst.height as u32).unwrap();
        resizer.resize_typed(&src_img, &mut view, options).unwrap();
    }
}

/// A built candidate: scales the 1080p source to one rung.
enum Built {
    Sws(Scaler),
    Fir(Box<FirScaler>),
}

impl Built {
    fn new(c: Candidate, dst: (u32, u32)) -> Built {
        match c {
            Candidate::Sws(k) => {
                Built::Sws(Scaler::with_kernel(SRC.0, SRC.1, dst.0, dst.1, k).unwrap())
            }
            Candidate::Fir(f) => Built::Fir(Box::new(FirScaler::new(f))),
        }
    }

    fn scale(&mut self, src: &Picture, dst: &mut Picture) {
        match self {
            Built::Sws(s) => s.scale(src, dst).unwrap(),
            Built::Fir(s) => s.scale(src, dst),
        }
    }
}

fn content() -> Vec<(&'static str, Picture)> {
    let mut out = Vec::new();
    for name in ["testsrc2", "mandelbrot", "cellauto"] {
        match reference::ffmpeg_frame(name, SRC.0, SRC.1) {
            Some(p) => out.push((name, p)),
            None => eprintln!("no ffmpeg: {name} left out"),
        }
    }
    if out.is_empty() {
        out.push(("synthetic", reference::synthetic(SRC.0, SRC.1)));
    }
    out
}

/// Sample-count-weighted PSNR of Y, U, V (4:1:1) and Y alone, border of 4
/// output samples left out (edge handling is not what is compared).
fn psnr(pic: &Picture, r: &[Vec<f64>; 3]) -> (f64, f64) {
    let m: Vec<f64> = (0..3)
        .map(|i| reference::mse(&pic.planes[i], &r[i], 4))
        .collect();
    (
        reference::psnr((4.0 * m[0] + m[1] + m[2]) / 6.0),
        reference::psnr(m[0]),
    )
}

fn plane_ref(p: &Picture) -> [Vec<f64>; 3] {
    [0, 1, 2].map(|i| {
        let plane = &p.planes[i];
        (0..plane.height)
            .flat_map(|y| plane.row(y).iter().map(|&v| f64::from(v)))
            .collect()
    })
}

fn quality(content: &[(&str, Picture)]) {
    println!("\n## PSNR (dB) vs f64 Lanczos-3 [vs swscale lanczos accurate], YUV (Y)\n");
    println!("| content | rung | candidate | vs f64 Lanczos-3 | vs sws lanczos |");
    println!("|---|---|---|---|---|");
    for (name, src) in content {
        for h in RUNGS {
            let dst = rung_size(SRC.0, SRC.1, (1, 1), None, Some(h));
            let f64_ref = reference::lanczos3(src, dst.0, dst.1);
            let mut sws_ref = Picture::new(dst.0, dst.1);
            Scaler::with_kernel(SRC.0, SRC.1, dst.0, dst.1, SwsKernel::LanczosAccurate)
                .unwrap()
                .scale(src, &mut sws_ref)
                .unwrap();
            let sws_ref = plane_ref(&sws_ref);
            for (label, c) in CANDIDATES {
                let mut out = Picture::new(dst.0, dst.1);
                Built::new(c, dst).scale(src, &mut out);
                let (a, ay) = psnr(&out, &f64_ref);
                let (b, by) = psnr(&out, &sws_ref);
                println!(
                    "| {name} | {}x{} | {label} | {a:.2} ({ay:.2}) | {b:.2} ({by:.2}) |",
                    dst.0, dst.1
                );
            }
        }
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let content = content();
    quality(&content);
    let src = &content[0].1;
    for h in RUNGS {
        let dst = rung_size(SRC.0, SRC.1, (1, 1), None, Some(h));
        let mut group = c.benchmark_group(format!("1080p_to_{}x{}", dst.0, dst.1));
        for (label, cand) in CANDIDATES {
            let mut built = Built::new(cand, dst);
            let mut out = Picture::new(dst.0, dst.1);
            group.bench_function(label, |b| {
                b.iter(|| built.scale(black_box(src), black_box(&mut out)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
