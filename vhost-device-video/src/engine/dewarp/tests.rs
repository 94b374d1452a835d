use proptest::prelude::*;

use super::maps::{driver_identity_map, scale_map};
use super::*;

/// A picture in owned buffers.
#[derive(Clone, Debug)]
struct Picture {
    geometry: ImageGeometry,
    luma: Vec<u8>,
    chroma: Vec<u8>,
}

impl Picture {
    fn filled(geometry: ImageGeometry, seed: u32) -> Self {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        };
        let luma = (0..geometry.luma_extent()).map(|_| next()).collect();
        let chroma = (0..geometry.chroma_extent()).map(|_| next()).collect();
        Picture {
            geometry,
            luma,
            chroma,
        }
    }

    fn source(&self) -> SourceImage<'_> {
        SourceImage {
            geometry: self.geometry,
            luma: &self.luma,
            chroma: &self.chroma,
        }
    }

    fn remap(&self, engine: &dyn DewarpEngine, params: &RemapParams<'_>, dst: &Picture) -> Picture {
        let mut out = dst.clone();
        let mut image = DestImage {
            geometry: out.geometry,
            luma: &mut out.luma,
            chroma: &mut out.chroma,
        };
        engine.remap(params, &self.source(), &mut image).unwrap();
        out
    }
}

fn geometry(format: PixelFormat, width: u32, height: u32, pad: [usize; 2]) -> ImageGeometry {
    let mut g = ImageGeometry::packed(format, width, height);
    g.luma_stride += pad[0];
    g.chroma_stride += pad[1];
    g
}

const SOURCE_FORMATS: [PixelFormat; 4] = [
    PixelFormat::Nv12,
    PixelFormat::Nv16,
    PixelFormat::Yuyv,
    PixelFormat::Uyvy,
];

#[test]
fn identity_map_reproduces_the_source_for_every_same_format_pair() {
    for format in SOURCE_FORMATS {
        for (width, height) in [(176, 144), (320, 240), (184, 152), (200, 168)] {
            let map = if width % 16 == 0 && height % 16 == 0 {
                driver_identity_map(width, height, width, height)
            } else {
                scale_map(width, height, width, height)
            };
            let params = RemapParams {
                map: &map,
                crop: Crop::full(width, height),
            };
            let src = Picture::filled(geometry(format, width, height, [0, 0]), width + height);
            let dst = Picture::filled(src.geometry, 7);
            for engine in [
                &ReferenceEngine as &dyn DewarpEngine,
                &FastEngine::new(1),
                &FastEngine::new(3),
            ] {
                let out = src.remap(engine, &params, &dst);
                assert_eq!(out.luma, src.luma, "{format:?} {width}x{height}");
                assert_eq!(out.chroma, src.chroma, "{format:?} {width}x{height}");
            }
        }
    }
}

#[test]
fn half_crop_with_identity_map_zooms_the_crop_twice() {
    let (width, height) = (320, 240);
    let map = driver_identity_map(width, height, width, height);
    let crop = Crop {
        left: 40,
        top: 24,
        width: 160,
        height: 120,
    };
    let params = RemapParams { map: &map, crop };
    let src = Picture::filled(geometry(PixelFormat::Nv16, width, height, [0, 0]), 3);
    let out = src.remap(&ReferenceEngine, &params, &Picture::filled(src.geometry, 1));
    for y in 0..height as usize / 2 {
        for x in 0..width as usize / 2 {
            let expected = src.luma[(y + 24) * 320 + x + 40];
            assert_eq!(out.luma[2 * y * 320 + 2 * x], expected, "({x}, {y})");
        }
    }
}

#[test]
fn positions_outside_the_source_give_black() {
    let (width, height) = (176, 144);
    let map = VertexMap::new(12, 10, vec![u32::MAX; 120]).unwrap();
    let params = RemapParams {
        map: &map,
        crop: Crop::full(width, height),
    };
    let src = Picture::filled(geometry(PixelFormat::Yuyv, width, height, [0, 0]), 3);
    let dst = Picture::filled(geometry(PixelFormat::Nv21, width, height, [0, 0]), 4);
    let out = src.remap(&ReferenceEngine, &params, &dst);
    assert!(out.luma.iter().all(|&y| y == BOUNDARY_LUMA));
    assert!(out.chroma.iter().all(|&c| c == BOUNDARY_CHROMA));
}

#[test]
fn bad_jobs_are_errors() {
    let src = Picture::filled(geometry(PixelFormat::Nv12, 176, 144, [0, 0]), 1);
    let map = driver_identity_map(176, 144, 176, 144);
    let good = RemapParams {
        map: &map,
        crop: Crop::full(176, 144),
    };
    let run = |params: &RemapParams<'_>, src: &SourceImage<'_>, dst: &mut Picture| {
        let mut image = DestImage {
            geometry: dst.geometry,
            luma: &mut dst.luma,
            chroma: &mut dst.chroma,
        };
        FastEngine::new(2).remap(params, src, &mut image)
    };
    let mut dst = src.clone();
    assert_eq!(run(&good, &src.source(), &mut dst), Ok(()));
    let mut short = src.clone();
    short.chroma.pop();
    assert!(matches!(
        run(&good, &short.source(), &mut dst),
        Err(DewarpError::BufferTooSmall { .. })
    ));
    let mut wide_crop = good;
    wide_crop.crop.left = 1;
    assert!(matches!(
        run(&wide_crop, &src.source(), &mut dst),
        Err(DewarpError::CropOutsideSource(_))
    ));
    let other_map = driver_identity_map(176, 144, 184, 144);
    let wrong_map = RemapParams {
        map: &other_map,
        ..good
    };
    assert!(matches!(
        run(&wrong_map, &src.source(), &mut dst),
        Err(DewarpError::MapDimensions { .. })
    ));
    let mut nv21 = src.clone();
    nv21.geometry.format = PixelFormat::Nv21;
    assert_eq!(
        run(&good, &nv21.source(), &mut dst),
        Err(DewarpError::NotASourceFormat(PixelFormat::Nv21))
    );
    let mut odd = src.clone();
    odd.geometry.width = 180;
    assert!(matches!(
        run(&good, &odd.source(), &mut dst),
        Err(DewarpError::SizeOutOfRange { .. })
    ));
}

#[derive(Clone, Debug)]
enum MapKind {
    /// Any 32-bit entries: positions all over and beyond the source.
    Wild(Vec<u32>),
    /// The identity plus per-vertex jitter (in 1/16 pixel).
    Jittered(Vec<(i32, i32)>),
}

fn build_map(kind: &MapKind, src: (u32, u32), dst: (u32, u32)) -> VertexMap {
    let base = driver_identity_map(src.0, src.1, dst.0, dst.1);
    let entries = base
        .entries()
        .iter()
        .enumerate()
        .map(|(i, &e)| match kind {
            MapKind::Wild(values) => values[i % values.len()],
            MapKind::Jittered(jitter) => {
                let (dx, dy) = jitter[i % jitter.len()];
                let x = ((e & 0xffff) as i32 + dx).clamp(0, 0xffff) as u32;
                let y = ((e >> 16) as i32 + dy).clamp(0, 0xffff) as u32;
                (y << 16) | x
            }
        })
        .collect();
    VertexMap::new(base.width(), base.height(), entries).unwrap()
}

fn map_kind() -> impl Strategy<Value = MapKind> {
    prop_oneof![
        prop::collection::vec(any::<u32>(), 1..64).prop_map(MapKind::Wild),
        prop::collection::vec((-600i32..600, -600i32..600), 1..64).prop_map(MapKind::Jittered),
    ]
}

fn size() -> impl Strategy<Value = (u32, u32)> {
    (22u32..=40, 18u32..=34).prop_map(|(w, h)| (w * 8, h * 8))
}

fn crop_within(width: u32, height: u32) -> impl Strategy<Value = Crop> {
    (0..width, 0..height).prop_flat_map(move |(left, top)| {
        (1..=width - left, 1..=height - top).prop_map(move |(w, h)| Crop {
            left,
            top,
            width: w,
            height: h,
        })
    })
}

prop_compose! {
    fn job()(
        src_format in prop::sample::select(SOURCE_FORMATS.to_vec()),
        dst_format in prop::sample::select(PixelFormat::ALL.to_vec()),
        (src_w, src_h) in size(),
        (dst_w, dst_h) in size(),
        src_pad in [0usize..40, 0usize..40],
        dst_pad in [0usize..40, 0usize..40],
        map in map_kind(),
        threads in 1usize..5,
        seed in any::<u32>(),
    )(
        crop in crop_within(src_w, src_h),
        src_format in Just(src_format),
        dst_format in Just(dst_format),
        src_size in Just((src_w, src_h)),
        dst_size in Just((dst_w, dst_h)),
        src_pad in Just(src_pad),
        dst_pad in Just(dst_pad),
        map in Just(map),
        threads in Just(threads),
        seed in Just(seed),
    ) -> (Picture, Picture, VertexMap, Crop, usize) {
        let src = Picture::filled(geometry(src_format, src_size.0, src_size.1, src_pad), seed);
        let dst = Picture::filled(geometry(dst_format, dst_size.0, dst_size.1, dst_pad), !seed);
        let map = build_map(&map, src_size, dst_size);
        (src, dst, map, crop, threads)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_engine_is_bit_exact_to_the_reference((src, dst, map, crop, threads) in job()) {
        let params = RemapParams { map: &map, crop };
        let expected = src.remap(&ReferenceEngine, &params, &dst);
        let fast = src.remap(&FastEngine::new(threads), &params, &dst);
        prop_assert_eq!(&fast.luma, &expected.luma);
        prop_assert_eq!(&fast.chroma, &expected.chroma);
    }
}

#[test]
fn fisheye_and_rotation_maps_are_bit_exact_for_every_format_pair() {
    let (sw, sh, dw, dh) = (200, 160, 184, 152);
    let maps = [
        super::maps::fisheye_correction_map(sw, sh, dw, dh, 0.3),
        super::maps::rotation_map(sw, sh, dw, dh, 17.0),
    ];
    let crop = Crop {
        left: 8,
        top: 6,
        width: 180,
        height: 144,
    };
    for src_format in SOURCE_FORMATS {
        let src = Picture::filled(geometry(src_format, sw, sh, [16, 8]), 11);
        for dst_format in PixelFormat::ALL {
            let dst = Picture::filled(geometry(dst_format, dw, dh, [8, 24]), 5);
            for map in &maps {
                let params = RemapParams { map, crop };
                let expected = src.remap(&ReferenceEngine, &params, &dst);
                for threads in [1, 3] {
                    let fast = src.remap(&FastEngine::new(threads), &params, &dst);
                    assert!(
                        fast.luma == expected.luma && fast.chroma == expected.chroma,
                        "{src_format:?} -> {dst_format:?}, {threads} threads"
                    );
                }
            }
        }
    }
}

#[test]
fn largest_pictures_with_wild_maps_and_offsets_run_without_overflow() {
    let (width, height) = (MAX_WIDTH, MAX_HEIGHT);
    let base = driver_identity_map(width, height, width, height);
    let entries = (0..base.entries().len() as u32)
        .map(|i| match i % 3 {
            0 => u32::MAX,
            1 => i.wrapping_mul(2_654_435_761),
            _ => 0,
        })
        .collect();
    let map = VertexMap::new(base.width(), base.height(), entries).unwrap();
    let params = RemapParams {
        map: &map,
        crop: Crop {
            left: width - 1,
            top: height - 1,
            width: 1,
            height: 1,
        },
    };
    let src = Picture::filled(geometry(PixelFormat::Nv16, width, height, [0, 0]), 2);
    let dst = Picture::filled(geometry(PixelFormat::Yuyv, width, height, [0, 0]), 3);
    let one = src.remap(&FastEngine::new(1), &params, &dst);
    let two = src.remap(&FastEngine::new(2), &params, &dst);
    assert!(one.luma == two.luma && one.chroma == two.chroma);
}
