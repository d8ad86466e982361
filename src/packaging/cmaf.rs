//! TEMPORARY stand-in (replaced by the real box writer at merge).
use bytes::Bytes;
#[derive(Clone, Debug)]
pub enum CodecSetup {
    Avc { avcc: Bytes, width: u32, height: u32, sar: (u32, u32) },
    Aac { asc: Bytes, sample_rate: u32, channels: u8 },
}
#[derive(Clone, Debug)]
pub struct TrackSetup { pub track_id: u32, pub timescale: u32, pub codec: CodecSetup }
pub fn init_segment(_t: &TrackSetup) -> Bytes { Bytes::from_static(b"init") }
#[derive(Clone, Debug)]
pub struct Sample { pub duration: u32, pub composition_offset: i32, pub keyframe: bool, pub data: Bytes }
pub struct ProducerReference { pub wall_clock: std::time::SystemTime, pub media_time: u64 }
pub struct ChunkHeader { pub sequence_number: u32, pub track_id: u32, pub base_media_decode_time: u64, pub segment_start: bool, pub producer_reference: Option<ProducerReference>, pub video: bool }
pub fn chunk(_h: &ChunkHeader, s: &[Sample]) -> Bytes { let mut v = Vec::new(); for x in s { v.extend_from_slice(&x.data); } Bytes::from(v) }
