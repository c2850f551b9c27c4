//! digits: recognises a handwritten digit in an 8x8 greyscale image (sklearn's `digits`).
//!
//! Input: JSON, either `[64 numbers]` or `{"pixels": [64 numbers]}`, row-major,
//! each 0 (blank) to 16 (ink). Shows that the host is not tied to text.

use edgecascade_guest::onnx::{OnnxModel, f32_tensor, tvec};
use edgecascade_guest::{Answer, Error, Input, LoadContext, Plugin, Prompt, classify, export_plugin};

const SIDE: usize = 8;
const MAX_INK: f32 = 16.0;

struct Digits {
    model: OnnxModel,
    labels: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Image {
    Bare(Vec<f32>),
    Object { pixels: Vec<f32> },
}

fn pixels(input: &Input<'_>) -> Result<Vec<f32>, Error> {
    let pixels = match input.json::<Image>()? {
        Image::Bare(p) | Image::Object { pixels: p } => p,
    };
    if pixels.len() != SIDE * SIDE {
        return Err(Error::bad_input(format!("expected 64 pixels, got {}", pixels.len())));
    }
    if let Some(bad) = pixels.iter().find(|p| !(0.0..=MAX_INK).contains(*p)) {
        return Err(Error::bad_input(format!("pixel value {bad} is outside 0..=16")));
    }
    Ok(pixels)
}

impl Plugin for Digits {
    fn load(ctx: &LoadContext<'_>) -> Result<Self, Error> {
        let labels = ctx.labels().to_vec();
        if labels.len() != 10 {
            return Err(Error::bad_input("digits needs the ten labels 0..9"));
        }
        Ok(Digits { model: OnnxModel::load(ctx.model("model")?)?, labels })
    }

    fn beyond(&self, input: &Input<'_>) -> Option<String> {
        let ink: f32 = pixels(input).ok()?.iter().sum();
        (ink < MAX_INK * 4.0).then(|| format!("almost blank image (total ink {ink})"))
    }

    fn infer(&mut self, input: &Input<'_>) -> Result<Answer, Error> {
        let pixels = pixels(input)?;
        let probs = self.model.run_f32(tvec![f32_tensor(&[1, SIDE * SIDE], &pixels)?])?;
        classify::answer(&self.labels, &probs)
    }

    /// Draws the image as text, so a chat model can read it.
    fn prompt(&self, input: &Input<'_>) -> Result<Prompt, Error> {
        let pixels = pixels(input)?;
        let shades = [' ', '.', ':', '*', '#'];
        let art: String = pixels
            .chunks(SIDE)
            .map(|row| {
                let line: String = row.iter().map(|&p| shades[((p / MAX_INK) * 4.0).round() as usize]).collect();
                format!("|{line}|\n")
            })
            .collect();
        let task = "This 8x8 drawing ('#' is dark ink, ' ' is blank) shows one handwritten digit. \
                    Which digit is it?";
        Ok(classify::prompt(task, &self.labels, &art))
    }

    fn parse_reply(&self, reply: &str) -> Result<Answer, Error> {
        classify::parse_reply(&self.labels, reply)
    }
}

export_plugin!(Digits);
