//! The dewarper's remap engine on raw files, on the host.
//!
//! ```text
//! dewarp remap --src NV12:640x480 --dst NV21:640x480 --map MAP --in IN --out OUT \
//!              [--crop L,T,W,H] [--engine fast|reference] [--threads N]
//! dewarp map identity|scale|fisheye|rotate --src WxH --dst WxH --out MAP \
//!              [--strength 0.3] [--degrees 10]
//! ```
//!
//! Raw pictures are laid out as a V4L2 buffer of the format with
//! `bytesperline` = width (times 2 for YUYV/UYVY): the luma (or packed)
//! plane, then for NV formats the interleaved chroma plane; `M` formats
//! (NV12M ...) are the same bytes. An input file may hold several frames
//! back to back; each is remapped. Maps are the raw
//! `V4L2_CID_DW100_DEWARPING_16x16_VERTEX_MAP` payload (little-endian u32,
//! `(DIV_ROUND_UP(w,16)+1) x (DIV_ROUND_UP(h,16)+1)` for the destination).
//! `--crop` is the rectangle the device receives (after the driver's
//! selection adjustments); the default is the whole source.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vhost_device_video::engine::dewarp::{
    map_vertices, maps, Crop, DestImage, DewarpEngine, FastEngine, ImageGeometry, PixelFormat,
    ReferenceEngine, RemapParams, SourceImage, VertexMap,
};

#[derive(Parser)]
#[command(about = "Run the dewarper's remap engine on raw files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Remap raw frames with a vertex map.
    Remap {
        /// Source format and size, e.g. NV12:640x480.
        #[arg(long, value_parser = parse_picture)]
        src: (PixelFormat, u32, u32),
        /// Destination format and size.
        #[arg(long, value_parser = parse_picture)]
        dst: (PixelFormat, u32, u32),
        /// Vertex map file.
        #[arg(long)]
        map: PathBuf,
        /// Source crop rectangle L,T,W,H.
        #[arg(long, value_parser = parse_crop)]
        crop: Option<Crop>,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long = "out")]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "fast")]
        engine: EngineKind,
        /// Threads of the fast engine (0: one per CPU).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Write a vertex map.
    Map {
        #[arg(value_enum)]
        kind: MapKind,
        /// Source size WxH.
        #[arg(long, value_parser = parse_size)]
        src: (u32, u32),
        /// Destination size WxH (sets the map dimensions).
        #[arg(long, value_parser = parse_size)]
        dst: (u32, u32),
        /// Fisheye correction strength.
        #[arg(long, default_value_t = 0.3)]
        strength: f64,
        /// Rotation angle in degrees.
        #[arg(long, default_value_t = 10.0)]
        degrees: f64,
        #[arg(long = "out")]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineKind {
    Fast,
    Reference,
}

#[derive(Clone, Copy, ValueEnum)]
enum MapKind {
    /// The dw100 driver's default map.
    Identity,
    /// Vertices on their own position scaled to the source.
    Scale,
    /// Barrel distortion correction.
    Fisheye,
    /// Rotation about the centre.
    Rotate,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once('x').ok_or("want WxH")?;
    Ok((
        w.parse().map_err(|e| format!("width: {e}"))?,
        h.parse().map_err(|e| format!("height: {e}"))?,
    ))
}

fn parse_picture(text: &str) -> Result<(PixelFormat, u32, u32), String> {
    let (name, size) = text.split_once(':').ok_or("want FORMAT:WxH")?;
    let name = name.to_ascii_uppercase();
    let single = name
        .strip_suffix('M')
        .filter(|n| n.len() == 4)
        .unwrap_or(&name);
    let code = single
        .as_bytes()
        .try_into()
        .map(u32::from_le_bytes)
        .map_err(|_| format!("unknown format {name}"))?;
    let format = PixelFormat::from_fourcc(code).ok_or(format!("unknown format {name}"))?;
    let (w, h) = parse_size(size)?;
    Ok((format, w, h))
}

fn parse_crop(text: &str) -> Result<Crop, String> {
    let values: Vec<u32> = text
        .split(',')
        .map(|v| v.parse().map_err(|e| format!("crop: {e}")))
        .collect::<Result<_, _>>()?;
    match values[..] {
        [left, top, width, height] => Ok(Crop {
            left,
            top,
            width,
            height,
        }),
        _ => Err("want L,T,W,H".into()),
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn frame_size(g: &ImageGeometry) -> usize {
    g.luma_extent() + g.chroma_extent()
}

#[allow(clippy::too_many_arguments)]
fn remap(
    src: (PixelFormat, u32, u32),
    dst: (PixelFormat, u32, u32),
    map: &PathBuf,
    crop: Option<Crop>,
    input: &PathBuf,
    output: &PathBuf,
    engine: EngineKind,
    threads: usize,
) -> Result<(), String> {
    let sg = ImageGeometry::packed(src.0, src.1, src.2);
    let dg = ImageGeometry::packed(dst.0, dst.1, dst.2);
    let map = VertexMap::from_le_bytes(map_vertices(dst.1), map_vertices(dst.2), &read(map)?)
        .map_err(|e| format!("map: {e}"))?;
    let frames = read(input)?;
    let (src_frame, dst_frame) = (frame_size(&sg), frame_size(&dg));
    if frames.is_empty() || frames.len() % src_frame != 0 {
        return Err(format!(
            "{}: {} bytes is not a whole number of {src_frame}-byte frames",
            input.display(),
            frames.len()
        ));
    }
    let engine: Box<dyn DewarpEngine> = match engine {
        EngineKind::Fast => Box::new(FastEngine::new(threads)),
        EngineKind::Reference => Box::new(ReferenceEngine),
    };
    let params = RemapParams {
        map: &map,
        crop: crop.unwrap_or(Crop::full(src.1, src.2)),
    };
    let mut out = vec![0u8; frames.len() / src_frame * dst_frame];
    for (frame, result) in frames
        .chunks_exact(src_frame)
        .zip(out.chunks_exact_mut(dst_frame))
    {
        let (luma, chroma) = frame.split_at(sg.luma_extent());
        let (dst_luma, dst_chroma) = result.split_at_mut(dg.luma_extent());
        let source = SourceImage {
            geometry: sg,
            luma,
            chroma,
        };
        let mut dest = DestImage {
            geometry: dg,
            luma: dst_luma,
            chroma: dst_chroma,
        };
        engine
            .remap(&params, &source, &mut dest)
            .map_err(|e| e.to_string())?;
    }
    std::fs::write(output, out).map_err(|e| format!("{}: {e}", output.display()))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Remap {
            src,
            dst,
            map,
            crop,
            input,
            output,
            engine,
            threads,
        } => remap(src, dst, &map, crop, &input, &output, engine, threads),
        Command::Map {
            kind,
            src,
            dst,
            strength,
            degrees,
            output,
        } => {
            let map = match kind {
                MapKind::Identity => maps::driver_identity_map(src.0, src.1, dst.0, dst.1),
                MapKind::Scale => maps::scale_map(src.0, src.1, dst.0, dst.1),
                MapKind::Fisheye => {
                    maps::fisheye_correction_map(src.0, src.1, dst.0, dst.1, strength)
                }
                MapKind::Rotate => maps::rotation_map(src.0, src.1, dst.0, dst.1, degrees),
            };
            std::fs::write(&output, map.to_le_bytes())
                .map_err(|e| format!("{}: {e}", output.display()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dewarp: {e}");
            ExitCode::FAILURE
        }
    }
}
